"""Which backends an environment configures: its `opsctl.yaml` section, else the standard
variables each backend module reads.  Used where opsctl sweeps "everything there is" (rb-001's
triage) and must skip, not fail on, what a team does not run."""

from __future__ import annotations

import os
from typing import Any

# the variables that configure a backend when the environment has no section for it
STANDARD_VARS: dict[str, tuple[str, ...]] = {
    "postgres": ("DATABASE_URL", "PGHOST", "PGSERVICE", "PGDATABASE", "PGPORT"),
    "redis": ("REDIS_URL",),
    "kafka": ("KAFKA_BOOTSTRAP_SERVERS",),
    "aws": ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID",
            "AWS_ENDPOINT_URL", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"),
    "kubernetes": ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"),
}


def configured(environment: Any, backend: str) -> tuple[bool, str]:
    """(configured, how): the environment's section, or the first standard variable set."""
    section = environment.backend(backend) if environment is not None else {}
    if section:
        return True, f"the {backend} section of environment {getattr(environment, 'name', '?')!r}"
    for var in STANDARD_VARS.get(backend, ()):
        if os.environ.get(var):
            return True, f"${var}"
    names = ", ".join(STANDARD_VARS.get(backend, ()))
    return False, f"not configured (no {backend} section in opsctl.yaml, none of {names})"
