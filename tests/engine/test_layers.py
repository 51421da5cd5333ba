"""The brief's layering, checked on the source (a pure AST walk of src/opsctl, no import of it):

- only backends/ imports the backend client libraries (boto3, botocore, kubernetes, psycopg,
  psycopg_pool, redis, kafka); the testing kit (opsctl.testing: it starts and feeds the servers) may;
- only serve/ imports its web stack (starlette, uvicorn, prometheus_client);
- in actions/k8s the mutating modules (mutate*) and the reading ones (read*, and every other module
  but the shared ``common``: network.py, netpol.py...) do not import each other.

Every import counts, lazy (inside a function) and type-only ones too, and importlib.import_module /
__import__ of a constant name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
BACKEND_LIBS = frozenset({"boto3", "botocore", "kubernetes", "psycopg", "psycopg_pool", "redis", "kafka"})
WEB_LIBS = frozenset({"starlette", "uvicorn", "prometheus_client"})
# libraries, the packages that alone may import them, and what they are
RULES = ((BACKEND_LIBS, ("opsctl.backends", "opsctl.testing"), "a backend client library"),
         (WEB_LIBS, ("opsctl.serve",), "serve/'s web stack"))
K8S = "opsctl.actions.k8s"
K8S_SHARED = frozenset({"common"})  # what both sides import


def k8s_side(module: str) -> str:
    """"mutate" or "read" for a module of actions/k8s (or inside one), "" for the package and common."""
    if not in_package(module, K8S) or module == K8S:
        return ""
    leaf = module[len(K8S) + 1:].split(".")[0]
    return "" if leaf in K8S_SHARED else "mutate" if leaf.startswith("mutate") else "read"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; ``from X import y`` gives X and X.y
    (y may be a module), relative imports resolved against the file's package."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if called in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(root: Path) -> list[str]:
    """Every broken rule under ``root`` (a directory holding the ``opsctl`` package)."""
    found = []
    for path in sorted((root / "opsctl").rglob("*.py")):
        name = module_name(path, root)
        where = path.relative_to(root)
        side = k8s_side(name)
        seen: set[tuple[int, str]] = set()  # one report per line and rule (from X import y gives X and X.y)
        for line, imported in imports(path, root):
            top = imported.split(".")[0]
            for libs, rooms, what in RULES:
                inside = any(in_package(name, room) for room in rooms)
                if top in libs and not inside and (line, what) not in seen:
                    seen.add((line, what))
                    only = " and ".join(room.removeprefix("opsctl.") + "/" for room in rooms)
                    found.append(f"{where}:{line}: imports {imported} ({what}: only {only} may)")
            other = k8s_side(imported)
            if side and other and other != side and (line, "k8s") not in seen:
                seen.add((line, "k8s"))
                found.append(f"{where}:{line}: imports {imported} (in actions/k8s the mutating modules "
                             "(mutate*) and the reading ones do not import each other; share through common)")
    return found


def test_the_source_keeps_its_layers() -> None:
    problems = violations(SRC)
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_the_walk_sees_the_source_it_checks() -> None:
    """The walk is not blind: it finds the backends' own (lazy) imports of every client library, and
    both sides of actions/k8s."""
    seen: set[str] = set()
    for path in (SRC / "opsctl" / "backends").rglob("*.py"):
        seen |= {m.split(".")[0] for _, m in imports(path, SRC)}
    assert BACKEND_LIBS - {"psycopg_pool"} <= seen, sorted(BACKEND_LIBS - seen)
    sides = {k8s_side(module_name(p, SRC)) for p in (SRC / "opsctl" / "actions" / "k8s").glob("*.py")}
    assert {"read", "mutate"} <= sides, sides


def test_each_rule_catches_a_breach(tmp_path: Path) -> None:
    files = {
        "opsctl/__init__.py": "",
        "opsctl/backends/__init__.py": "",
        "opsctl/backends/redis.py": "import redis\n",  # allowed
        "opsctl/testing/kafka.py": "from kafka import KafkaProducer\n",  # allowed
        "opsctl/serve/app.py": "from starlette.applications import Starlette\n",  # allowed
        "opsctl/serve/bad.py": "import psycopg\n",
        "opsctl/actions/__init__.py": "",
        "opsctl/actions/aws/ecs.py": "def f():\n    from botocore.exceptions import ClientError\n",
        "opsctl/actions/postgres/q.py": "import importlib\nimportlib.import_module('psycopg_pool')\n",
        "opsctl/testing/web.py": "import uvicorn\n",
        "opsctl/actions/k8s/__init__.py": "from opsctl.actions.k8s import mutate, read\n",  # allowed
        "opsctl/actions/k8s/common.py": "",
        "opsctl/actions/k8s/read_services.py": "from opsctl.actions.k8s.common import X\n",  # allowed
        "opsctl/actions/k8s/read.py": "from . import mutate\n",
        "opsctl/actions/k8s/mutate.py": "from opsctl.actions.k8s.read_services import Y\n",
        "opsctl/actions/k8s/netpol.py": "",
        "opsctl/actions/k8s/network.py": "from .netpol import Z\nfrom opsctl.actions.k8s.mutate import W\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    problems = violations(tmp_path)
    flagged = sorted({p.split(":")[0] for p in problems})
    assert flagged == sorted(str(Path(f)) for f in (
        "opsctl/serve/bad.py", "opsctl/actions/aws/ecs.py", "opsctl/actions/postgres/q.py",
        "opsctl/testing/web.py", "opsctl/actions/k8s/read.py", "opsctl/actions/k8s/mutate.py",
        "opsctl/actions/k8s/network.py")), problems
    assert not any("netpol" in p for p in problems), problems  # read modules may share among themselves
    assert any("imports opsctl.actions.k8s.mutate" in p and "read.py" in p for p in problems), problems
    assert any("imports botocore.exceptions (a backend client library" in p for p in problems), problems
