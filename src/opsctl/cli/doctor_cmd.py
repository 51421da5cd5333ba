"""`opsctl doctor`: is an environment ready for the shipped runbooks? (opsctl.doctor)"""

from __future__ import annotations

from typing import Annotated

import typer

from opsctl.cli.run_cmd import Output, complete_env


def doctor(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment from opsctl.yaml (default: "
                                                                "OPSCTL_ENV, default_environment, else "
                                                                "the standard variables).",
                                                  autocompletion=complete_env)] = None,
    output: Annotated[Output, typer.Option("--output", "-o",
                                           help="text for people, json for tools.")] = Output.text,
    timeout: Annotated[float, typer.Option("--timeout", min=0.5, max=300, metavar="SECONDS",
                                           help="One deadline for every check together.")] = 5.0,
) -> int:
    """Check every configured backend: reachable, authenticated, version, and the permissions the
    shipped diagnoses need. Exit 0 ready, 1 a permission missing, 4 a backend unusable."""
    from opsctl import config
    from opsctl import doctor as doc_mod
    from opsctl.tables import doctor_table

    environment = config.load_environment(env)
    code, probes, took = doc_mod.check(environment, timeout)
    doctor_table(doc_mod.document(environment, code, probes, took), output.value)
    return code
