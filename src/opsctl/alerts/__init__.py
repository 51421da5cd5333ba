"""Alert-triggered diagnosis: payloads -> alerts -> runbook bindings -> read-only runs -> Slack.

``payloads`` reads Alertmanager (v4) and PagerDuty (v3) webhooks, ``bindings`` maps each alert to a
runbook and its parameters, ``runner`` runs the diagnosis (or, for a resolved alert, the verify
phase) through the executor, ``message`` builds the Slack message.  No web imports here: the HTTP
receiver is ``opsctl.serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from opsctl.errors import RunbookError

if TYPE_CHECKING:
    from opsctl.alerts.bindings import Catalogue
    from opsctl.config import Environment


def load_catalogue(paths: list[str] | None = None, environment: Environment | None = None
                   ) -> tuple[Catalogue, list[RunbookError]]:
    """The runbooks of ``paths`` (files or directories; default: the catalogue's search path), and
    every validation error, including two runbooks claiming one alert.  With ``environment``, its
    ``params`` fill in what an alert does not give (as for ``opsctl run --env``)."""
    from opsctl import catalog
    from opsctl.alerts.bindings import Catalogue, claim_errors

    files = catalog.expand_paths(paths) if paths else [str(p) for p in catalog.runbook_files()]
    runbooks, errors, seen = [], [], set()
    for f in files:
        rb, errs = catalog.check_file(f)
        errors += errs
        if rb is not None and rb.id not in seen:
            seen.add(rb.id)
            runbooks.append(rb)
    errors += claim_errors(runbooks)
    return Catalogue(runbooks, environment), errors


def read_payload(path: str) -> bytes:
    """A payload file, or stdin for ``-``."""
    import sys

    from opsctl.errors import UsageError

    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
