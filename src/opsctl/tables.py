"""Summary tables that read finished records: the fan-out over environments (`opsctl run --env A
--env B`) and `opsctl doctor`.  Rich for people, one JSON document for machines (secrets masked
like every other output)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

_STATUS = {"ok": "[green]ok[/]", "not_run": "[dim]not run[/]", "error": "[red]error[/]",
           "warning": "[yellow]warning[/]", "failed": "[red]failed[/]",
           "not_configured": "[dim]not configured[/]", "unreachable": "[red]unreachable[/]",
           "timed_out": "[red]no answer[/]", "denied": "[red]denied[/]",
           "permission_gap": "[yellow]permission gap[/]"}


def _console() -> Console:
    return Console(file=sys.stdout, highlight=False)


def _dump(doc: dict[str, Any]) -> None:
    from opsctl.audit import redact

    sys.stdout.write(json.dumps(redact(doc), indent=2, default=str) + "\n")  # one write to mask


def fanout_summary(rb: Any, rows: list[Any], code: int, output: str, dry_run: bool) -> None:
    if output == "json":
        _dump({"runbook": rb.id, "title": rb.title, "dry_run": dry_run, "exit_code": code,
               "environments": [r.summary() for r in rows],
               "runs": {r.environment: r.document for r in rows if r.document}})
        return
    table = Table(title=f"{rb.id} over {len(rows)} environment(s)", title_justify="left")
    for col in ("environment", "verdict", "exit", "findings", "first finding / reason", "run"):
        table.add_column(col, overflow="fold")
    for r in rows:
        counts = ", ".join(f"{n} {kind}" for n, kind in ((r.critical, "critical"), (r.warning, "warning"))
                           if n) or ("-" if r.exit_code is None else "none")
        # what ended a failed run says more than a finding; a clean run's first finding says most
        detail = r.first_finding if r.exit_code == 0 else (r.message or r.first_finding)
        table.add_row(escape(r.environment), _STATUS.get(r.status, escape(r.status)),
                      "-" if r.exit_code is None else str(r.exit_code), counts, escape(detail or "-"),
                      escape(r.run_id or "-"))
    console = _console()
    console.print(table)
    colour = "green" if code == 0 else "red"
    console.print(f"[bold {colour}]exit {code}[/] (the worst of the environments; each run's log: "
                  "`opsctl report RUN_ID`)")


def doctor_table(doc: dict[str, Any], output: str) -> None:
    if output == "json":
        _dump(doc)
        return
    table = Table(title=f"opsctl doctor: environment {doc['environment']} ({doc['source']})",
                  title_justify="left")
    for col in ("backend", "status", "target", "version", "as", "detail"):
        table.add_column(col, overflow="fold")
    for row in doc["backends"]:
        lines = [row["detail"]] if row["detail"] else []
        lines += [f"missing: {m}" for m in row["missing"]]
        lines += [f"note: {n}" for n in row["notes"]]
        if row["status"] != "not_configured" and row["runbooks"]:
            lines.append(f"used by {', '.join(row['runbooks'])}")
        latency = f" ({row['latency_ms']:g} ms)" if row["latency_ms"] is not None else ""
        table.add_row(row["backend"], _STATUS.get(row["status"], escape(row["status"])),
                      escape(row["target"] or "-"), escape((row["version"] or "-") + latency),
                      escape(row["identity"] or "-"), escape("\n".join(lines)))
    console = _console()
    console.print(table)
    code = doc["exit_code"]
    verdict = {0: "ready", 1: "a diagnosis would be refused: grant what is missing",
               4: "a backend cannot be used"}.get(code, "")
    console.print(f"[bold {'green' if code == 0 else 'red'}]exit {code}[/] {escape(verdict)} "
                  f"[dim]({doc['duration']:.2f}s)[/]")
