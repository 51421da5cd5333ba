"""Built-in actions with no backend: values, waiting, assertions, and a file write.

They let a runbook compute and show things, and they let the engine be tested on its own.
"""

from __future__ import annotations

import os
import time
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.needs import Local
from opsctl.errors import ActionError
from opsctl.records import Change, Plan


@register
class Echo(Action):
    """Return a value (any JSON) as the step result, e.g. to show a computed summary.

    ```yaml
    - id: summary
      action: core.echo
      with: {value: {pool_pct: "{{ steps.usage.result.usage_pct }}"}}
    ```
    """

    name = "core.echo"
    permissions = (Local("core", "nothing: evaluated inside opsctl"),)
    summary = "Return `value` as the result"
    schema = type_schema({"value": {}}, required=["value"])

    def run(self) -> Any:
        return {"value": self.args["value"]}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return str(result.get("value"))[:160]


@register
class Sleep(Action):
    """Wait a number of seconds (stops at once on timeout or Ctrl-C).

    ```yaml
    - id: settle
      action: core.sleep
      with: {seconds: 5}
    ```
    """

    name = "core.sleep"
    permissions = (Local("core", "nothing: waits inside opsctl"),)
    summary = "Wait `seconds`"
    schema = type_schema({"seconds": {"type": "number", "minimum": 0, "maximum": 86400}},
                         required=["seconds"])

    def run(self) -> Any:
        t0 = time.monotonic()
        self.ctx.sleep(float(self.args["seconds"]))
        return {"slept": round(time.monotonic() - t0, 3)}


@register
class Assert(Action):
    """Fail the step unless `that` is true (use with a template over earlier results).

    ```yaml
    - id: guard
      action: core.assert
      with: {that: "{{ steps.usage.result.usage_pct < 99 }}", message: pool is saturated}
    ```
    """

    name = "core.assert"
    permissions = (Local("core", "nothing: evaluated inside opsctl"),)
    summary = "Fail unless `that` is true"
    schema = type_schema({"that": {"type": "boolean"}, "message": {"type": "string"}},
                         required=["that"])

    def run(self) -> Any:
        if not self.args["that"]:
            raise ActionError(self.args.get("message") or "assertion failed")
        return {"ok": True}


@register
class WriteFile(Action):
    """Write text to a file (a mutating action with a plan: the file's content before -> after).

    ```yaml
    - id: mark
      action: core.write_file
      with: {path: /tmp/maintenance.flag, content: "on"}
    ```
    """

    name = "core.write_file"
    permissions = (Local("core", "write access to the directory of the file", apply=True),)
    read_only = False
    summary = "Write `content` to the file at `path`"
    schema = type_schema({"path": {"type": "string", "minLength": 1}, "content": {"type": "string"}},
                         required=["path", "content"])

    def plan(self) -> Plan:
        path, content = self.args["path"], self.args["content"]
        before = _read(path)
        if before == content:
            return Plan(summary=f"{path} already has the wanted content")
        return Plan(summary=f"write {len(content)} byte(s) to {path}",
                    changes=[Change(target=path, operation="create" if before is None else "update",
                                    before=before, after=content)],
                    data={"path": path, "content": content, "before": before})

    def apply(self, plan: Plan) -> Any:
        path = plan.data["path"]
        if _read(path) != plan.data["before"]:
            raise ActionError(f"{path} changed since the plan was made; re-run to re-plan")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(plan.data["content"])
        return {"path": path, "written": len(plan.data["content"])}


def _read(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as e:
        raise ActionError(f"cannot read {path}: {e.strerror}") from None
