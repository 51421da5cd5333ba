"""Names shared by the permission manifests and the Job/Argo manifests that use them."""

from __future__ import annotations

import re


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:50] or "runbook"


def service_account_name(runbook_id: str, *, read_only: bool = False) -> str:
    """The ServiceAccount (and Role/RoleBinding) name for a runbook: `opsctl-rb-006` may do what
    the whole runbook needs; `opsctl-rb-006-read` only what its read-only steps need."""
    return f"opsctl-{_slug(runbook_id)}" + ("-read" if read_only else "")
