"""`opsctl rehearse [PATH...]`: run the rehearsal files (``*.rehearsal.yaml``) of runbooks against
private local servers with injected faults (the rehearsal kit, ``opsctl.testing``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli.run_cmd import Output


def rehearse(
    paths: Annotated[list[str] | None, typer.Argument(help="Rehearsal files or directories "
                                                      "(default: ./runbooks).")] = None,
    only: Annotated[str | None, typer.Option("--only", metavar="TEXT",
                                             help="Only the rehearsals whose name contains TEXT.")] = None,
    skip_missing: Annotated[bool, typer.Option("--skip-missing", help="A server that cannot start "
                                               "here skips its rehearsals instead of failing (exit 4).")
                            ] = False,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.text,
) -> int:
    """Rehearse runbooks: start private PostgreSQL / Redis / Kafka / moto servers, inject each
    rehearsal's faults, run the runbook, check what must hold. Exit 0 all held, 1 one did not,
    2 an invalid rehearsal file, 4 a server could not start."""
    from opsctl.errors import ExitCode, UsageError
    from opsctl.testing.rehearse import LocalServers, RehearsalInvalid, find, read_file, run_file

    targets = paths or (["runbooks"] if Path("runbooks").is_dir() else [])
    if not targets:
        raise UsageError("nothing to rehearse: give rehearsal files or directories (no ./runbooks here)")
    files = find(targets)
    if not files:
        raise UsageError(f"no rehearsal files (*.rehearsal.yaml) in {', '.join(targets)}; "
                         "`opsctl new NAME` writes one beside each new runbook")
    invalid = []
    for f in files:
        try:
            read_file(f)
        except RehearsalInvalid as e:
            invalid += e.errors
        except OSError as e:
            raise UsageError(f"{f}: cannot read: {e.strerror or e}") from None
    if invalid:
        for err in invalid:
            typer.echo(str(err), err=True)
        typer.echo(f"{len(invalid)} error(s) in rehearsal files; nothing was run", err=True)
        return ExitCode.INVALID
    servers = LocalServers()
    results = []
    try:
        for f in files:
            spec = read_file(f)
            picked = [i for i, r in enumerate(spec.rehearsals) if not only or only in r["name"]]
            if not picked:
                continue
            for r in run_file(f, servers, only=picked):
                results.append(r)
                if output == Output.text:
                    _print(r)
    finally:
        servers.stop_all()
    if output == Output.json:
        typer.echo(json.dumps([r.__dict__ for r in results], indent=2))
    failed = sum(1 for r in results if not r.ok and not r.skipped)
    skipped = sum(1 for r in results if r.skipped)
    passed = len(results) - failed - skipped
    if output == Output.text:
        typer.echo(f"{len(results)} rehearsal(s): {passed} passed, {failed} failed, {skipped} skipped")
    if failed:
        return 1
    if skipped and not skip_missing:
        typer.echo("a server could not start here (--skip-missing turns this into a skip)", err=True)
        return ExitCode.BACKEND
    return 0


def _print(r: object) -> None:
    from opsctl.testing.rehearse import RehearsalResult

    assert isinstance(r, RehearsalResult)
    if r.skipped:
        typer.echo(f"SKIP {r.file}: {r.name}: {r.skipped}")
    elif r.ok:
        typer.echo(f"ok   {r.file}: {r.name} ({r.duration:.1f} s)")
    else:
        typer.echo(f"FAIL {r.file}: {r.name} ({r.duration:.1f} s)")
        for line in r.failures:
            typer.echo(f"  {line}")
