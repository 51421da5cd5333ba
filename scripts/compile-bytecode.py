"""Byte-compile opsctl and the libraries `opsctl validate` and the CLI import, as pip does at install.

uv installs without bytecode, and where the machine sets PYTHONDONTWRITEBYTECODE=1 each start would
compile them from source again (~0.07 s of every `opsctl` command; the editable checkout's own
modules too).  Run by scripts/setup.sh and bench/validate_vs_custodian.py.

The backend clients and the rehearsal kit's servers are byte-compiled by importing what opsctl
imports of them (with bytecode writing on), not package by package: the kubernetes package alone
holds 1,900 modules (~7 s of CPU to compile all of them), of which a run imports a few hundred.
Without it, a Kubernetes runbook's run on such a machine spent ~1.5 s of CPU compiling kubernetes'
API classes, and each moto server of `opsctl rehearse` ~1.3 s compiling moto.  A later edit of a
source file makes its .pyc stale, not wrong: Python compares the source's mtime and size.
"""

import compileall
import importlib
import importlib.util
import sys
from pathlib import Path

PACKAGES = ("opsctl", "yaml", "jinja2", "markupsafe", "jsonschema_rs", "pglast",
            "typer", "click", "rich", "markdown_it", "mdurl", "pygments", "shellingham", "pydantic",
            "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions")

for name in PACKAGES:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        continue
    origin = Path(spec.origin)
    if origin.name == "__init__.py":
        compileall.compile_dir(str(origin.parent), quiet=2)
    else:
        compileall.compile_file(str(origin), quiet=2)


# imported as a run imports them, writing each module's .pyc on the way
sys.dont_write_bytecode = False
WARM = (
    # the backend clients, through the action registry (boto3, psycopg, redis, kafka, kubernetes)
    "opsctl.actions",
    # the generated API classes opsctl.backends.kubernetes makes on first use
    "kubernetes.client.api.core_v1_api", "kubernetes.client.api.apps_v1_api",
    "kubernetes.client.api.autoscaling_v1_api", "kubernetes.client.api.networking_v1_api",
    "kubernetes.config",
    # the rehearsal kit: moto's server and the services opsctl's AWS actions call
    "opsctl.testing.moto_patches", "moto.server",
    *(f"moto.{service}.urls" for service in ("sqs", "awslambda", "cloudwatch", "events", "ecs", "rds",
                                             "iam", "sts", "autoscaling", "logs")),
)
for name in WARM:
    try:
        module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - an optional extra that is not installed: nothing to compile
        continue
    if name == "opsctl.actions":
        module.load_all()
