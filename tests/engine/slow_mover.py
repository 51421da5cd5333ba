"""`python -m tests.engine.slow_mover ARGS` is `opsctl ARGS` with one more action registered:
test.slow_move, a mutation that moves files one by one (a redrive in miniature), reports its
progress, and does not stop in time when cancelled (so that only a second Ctrl-C ends the wait).
It cannot be shipped (it ignores cancellation on purpose), so it lives with the tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.records import Change, Plan


class SlowMove(Action):
    name = "test.slow_move"
    read_only = False
    summary = "move files from src to dst, slowly"
    schema = type_schema({"src": {"type": "string"}, "dst": {"type": "string"}}, required=["src", "dst"])

    def plan(self) -> Plan:
        names = sorted(os.listdir(self.args["src"]))
        return Plan(summary=f"move {len(names)} file(s) to {self.args['dst']}", data={"names": names},
                    changes=[Change(target=f"file {n}", operation="move", before=self.args["src"],
                                    after=self.args["dst"]) for n in names])

    def apply(self, plan: Plan) -> Any:
        names = plan.data["names"]
        moved = 0
        with self.ctx.progress("Moving", total=len(names)) as bar:
            for n in names:
                os.rename(Path(self.args["src"]) / n, Path(self.args["dst"]) / n)
                moved += 1
                bar.advance(1, moved=moved)
                time.sleep(0.2)  # never looks at ctx.cancelled: a step that does not stop in time
        return {"moved": moved}


def main() -> None:
    from opsctl.actions import load_all
    from opsctl.cli.main import main as opsctl_main

    load_all()
    register(SlowMove)
    opsctl_main()


if __name__ == "__main__":
    main()
