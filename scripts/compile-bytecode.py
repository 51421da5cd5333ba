"""Byte-compile opsctl and the libraries `opsctl validate` and the CLI import, as pip does at install.

uv installs without bytecode, and where the machine sets PYTHONDONTWRITEBYTECODE=1 each start would
compile them from source again (~0.07 s of every `opsctl` command; the editable checkout's own
modules too).  Run by scripts/setup.sh and bench/validate_vs_custodian.py.  A later edit of a
source file makes its .pyc stale, not wrong: Python compares the source's mtime and size.
"""

import compileall
import importlib.util
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
