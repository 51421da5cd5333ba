"""`opsctl new NAME --from RUNBOOK | --backend KIND`: scaffold a runbook and its rehearsal file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli.run_cmd import complete_runbook


def new(
    name: Annotated[str, typer.Argument(help="The new runbook's id: a slug (pg-pool-exhausted, rb-042).")],
    source: Annotated[str | None, typer.Option("--from", metavar="RUNBOOK", autocompletion=complete_runbook,
                                               help="Copy this runbook (id or file) and its rehearsal.")
                      ] = None,
    backend: Annotated[str | None, typer.Option("--backend", metavar="postgres|redis|kafka|aws",
                                                help="Start from the example runbook of a backend.")
                       ] = None,
    directory: Annotated[Path, typer.Option("--dir", help="Where to write (created if needed).")
                         ] = Path("runbooks"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> int:
    """Scaffold runbooks/NAME.yaml (validates as written: the modeline, commented examples of each
    step feature) and runbooks/NAME.rehearsal.yaml for `opsctl rehearse`."""
    from opsctl.catalog import check_file
    from opsctl.errors import ValidationFailed
    from opsctl.scaffold import new as scaffold

    written = scaffold(name, source=source, backend=backend, directory=directory, force=force)
    _, errors = check_file(str(written[0]))
    for path in written:
        typer.echo(f"wrote {path}")
    if errors:
        raise ValidationFailed(errors)
    typer.echo("\nnext:")
    typer.echo(f"  opsctl validate {written[0]}")
    typer.echo(f"  opsctl rehearse {written[1]}      # a private server, the fault, what must hold")
    typer.echo(f"  opsctl run {written[0]} --dry-run")
    return 0
