"""Named environments from ``opsctl.yaml`` (cwd), ``$OPSCTL_CONFIG`` or ``~/.config/opsctl/config.yaml``.

```yaml
default_environment: local
environments:
  local:
    settings:            # non-secret values, visible to runbooks as `env.<name>`
      namespace: default
    postgres: {dsn: "postgresql://ops@127.0.0.1:5432/app", password: "${PGPASSWORD}"}
    redis: {url: "redis://127.0.0.1:6379/0"}
    kafka: {bootstrap_servers: "127.0.0.1:9092"}
    aws: {region: eu-west-1, profile: prod, endpoint_url: null}
    kubernetes: {kubeconfig: ~/.kube/config, context: prod}
    http: {timeout: 5}
    prometheus: {url: "http://prometheus:9090"}
```
``${VAR}`` is expanded from the process environment so secrets can stay out of the file.  A backend
whose section is missing falls back to its standard variables (libpq / DATABASE_URL, REDIS_URL,
KAFKA_BOOTSTRAP_SERVERS, the boto3 chain, KUBECONFIG).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl.errors import ConfigError, UsageError

BACKENDS = ("postgres", "redis", "kafka", "aws", "kubernetes", "http", "prometheus", "notify")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Environment:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    def backend(self, name: str) -> dict[str, Any]:
        return self.backends.get(name, {})

    def template_view(self) -> dict[str, Any]:
        """What runbooks see as ``env``: the name and the non-secret settings only."""
        return {"name": self.name, **self.settings}


def config_paths() -> list[Path]:
    paths = [Path.cwd() / "opsctl.yaml"]
    if os.environ.get("OPSCTL_CONFIG"):
        paths.insert(0, Path(os.environ["OPSCTL_CONFIG"]))
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    paths.append(Path(xdg) / "opsctl" / "config.yaml")
    return paths


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return _VAR.sub(lambda m: os.environ.get(m.group(1), ""), value)
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def _read(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("environments", {}), dict):
        raise ConfigError(f"{path}: expected a mapping with an 'environments' mapping")
    return data


def load_environment(name: str | None = None) -> Environment:
    path = next((p for p in config_paths() if p.is_file()), None)
    data = _read(path) if path else {}
    envs: dict[str, Any] = data.get("environments") or {}
    name = name or os.environ.get("OPSCTL_ENV") or data.get("default_environment")
    if not name:
        return Environment(name="default", source="environment variables")
    if name not in envs:
        known = ", ".join(sorted(envs)) or "none"
        where = str(path) if path else "no opsctl.yaml found"
        raise UsageError(f"unknown environment {name!r} ({where}; known: {known})")
    raw = _expand(envs[name] or {})
    unknown = set(raw) - set(BACKENDS) - {"settings"}
    if unknown:
        raise ConfigError(f"{path}: environment {name!r}: unknown section(s) {sorted(unknown)}; "
                          f"expected settings or one of {', '.join(BACKENDS)}")
    backends = {k: dict(v or {}) for k, v in raw.items() if k in BACKENDS}
    return Environment(name=name, settings=dict(raw.get("settings") or {}), backends=backends,
                       source=str(path))
