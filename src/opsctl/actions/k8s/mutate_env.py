"""``k8s.set_env``: patch one environment variable of a workload's container (a pool size, a flag),
with numeric bounds for its blast radius, a server-side dry run in the plan and the rollout wait."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import type_schema
from opsctl.actions.k8s.common import KIND, NAME, NS
from opsctl.actions.k8s.mutate import WAIT, Mutating
from opsctl.actions.needs import Kube
from opsctl.errors import ActionError
from opsctl.records import Change, Plan


@register
class SetEnv(Mutating):
    """Set one environment variable of a workload's container (e.g. a pool size); rolls the pods.

    ```yaml
    - id: raise_pool
      action: k8s.set_env
      with: {name: orders, namespace: shop, container: app, var: DB_POOL_SIZE, value: "40"}
    ```
    """

    name = "k8s.set_env"
    # the plan sends the patch as a server-side dry run (dryRun=All): RBAC cannot tell it apart
    permissions = (Kube("apps", ("{kind}s",), ("get", "patch")), Kube("", ("pods",), ("list",), apply=True))
    summary = "patch one container env var (plan: old -> new value), then wait for the rollout"
    schema = type_schema({"kind": KIND, "name": NAME, "namespace": NS,
                          "container": {"type": "string", "description": "default: the only container"},
                          "var": {"type": "string", "pattern": "^[-._a-zA-Z][-._a-zA-Z0-9]*$"},
                          "value": {"type": ["string", "number", "integer", "boolean"]},
                          "min_value": {"type": "number", "description": "refuse a numeric value below this"},
                          "max_value": {"type": "number", "description": "refuse a numeric value above this"},
                          "max_reason": {"type": "string", "description": "why max_value is the limit "
                                         "(said in the refusal: pool x replicas must fit max_connections)"},
                          **WAIT}, required=["name", "var", "value"])

    def _bounds(self, value: str) -> None:
        """Blast radius of a numeric setting (a pool size times replicas must fit the database)."""
        lo, hi = self.args.get("min_value"), self.args.get("max_value")
        if lo is None and hi is None:
            return
        try:
            number = float(value)
        except ValueError:
            raise ActionError(f"{self.args['var']}={value!r} is not a number (min_value / max_value given)") \
                from None
        if lo is not None and number < float(lo):
            raise ActionError(f"refusing {self.args['var']}={value}: below min_value {lo:g}")
        if hi is not None and number > float(hi):
            why = f" ({self.args['max_reason']})" if self.args.get("max_reason") else ""
            raise ActionError(f"refusing {self.args['var']}={value}: above max_value {hi:g}{why}")

    def _container(self, obj: Any) -> Any:
        cs = obj.spec.template.spec.containers
        want = self.args.get("container")
        if want:
            found = [c for c in cs if c.name == want]
            if not found:
                raise ActionError(f"no container {want!r} in {self.args['name']} ({[c.name for c in cs]})")
            return found[0]
        if len(cs) > 1:
            raise ActionError(f"{self.args['name']} has containers {[c.name for c in cs]}: say which one")
        return cs[0]

    def _current(self, container: Any, var: str) -> str | None:
        for e in container.env or []:
            if e.name == var:
                if e.value_from is not None:
                    raise ActionError(f"{var} comes from a secret / configmap reference: change it there")
                return str(e.value or "")
        return None

    @staticmethod
    def _text(value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    def plan(self) -> Plan:
        obj, var = self.read_workload(), self.args["var"]
        c = self._container(obj)
        before, after = self._current(c, var), self._text(self.args["value"])
        self._bounds(after)
        target = f"{self.kind} {self.ns}/{obj.metadata.name} container {c.name}"
        if before == after:
            return Plan(summary=f"{target}: {var} is already {after}")
        env = {"containers": [{"name": c.name, "env": [{"name": var, "value": after}]}]}
        self.validate_on_server(self.apps_fn("patch"), obj.metadata.name, self.ns,
                                {"spec": {"template": {"spec": env}}}, what=target)
        return Plan(summary=f"set {var}={after} on {target} (pods are replaced)",
                    changes=[Change(target, "set env", f"{var}={before}", f"{var}={after}")],
                    data={"name": obj.metadata.name, "container": c.name, "before": before, "after": after})

    def apply(self, plan: Plan) -> dict[str, Any]:
        d, var = plan.data, self.args["var"]
        obj = self.read_workload(d["name"])
        self.recheck(self.kind, d["name"], var, d["before"], self._current(self._container(obj), var))
        body = {"spec": {"template": {"spec": {"containers": [
            {"name": d["container"], "env": [{"name": var, "value": d["after"]}]}]}}}}
        fn = self.apps_fn("patch")
        self.call(fn, d["name"], self.ns, body, what=d["name"])  # strategic merge: env merges by name
        return {"name": d["name"], "var": var, "before": d["before"], "after": d["after"],
                "rollout": self.maybe_wait(self.kind, d["name"])}
