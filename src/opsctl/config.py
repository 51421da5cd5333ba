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
    tags: [dev]          # select environments: opsctl run RUNBOOK --env-tag dev
    prometheus: {url: "http://prometheus:9090"}
    notify:              # Slack: run notifications of P0/P1 runbooks, rb-001's messages
      slack_webhook_url: "${SLACK_WEBHOOK_URL}"
      channel: "#incidents"
      templates: {start: "..."}   # override a message (docs/notifications.md)
    params:              # this team's parameter values (under --param-file and -p)
      default: {namespace: shop}              # for every runbook that has such a parameter
      rb-011: {cluster: web, service: api}    # for one runbook
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

BACKENDS = ("postgres", "redis", "kafka", "aws", "kubernetes", "http", "prometheus", "notify",
            "serve")  # serve: {token: ...} for `opsctl serve`
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Environment:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""
    protected: bool = False  # production: type its name to confirm; --yes needs --yes-protected
    # applies per hour of one runbook here: an int for every runbook, or {runbook id or default: int}
    max_applies_per_hour: int | dict[str, int] | None = None
    tags: tuple[str, ...] = ()  # for selecting environments: `opsctl run --env-tag prod`
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # {runbook id or default: {name: value}}
    # where each of those values is written: (runbook id or default, name) -> "file:line:col"
    param_at: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    def backend(self, name: str) -> dict[str, Any]:
        return self.backends.get(name, {})

    def template_view(self) -> dict[str, Any]:
        """What runbooks see as ``env``: the name and the non-secret settings only."""
        return {"name": self.name, **self.settings}

    def params_for(self, runbook: Any, overridden: Any = ()) -> dict[str, Any]:
        """This environment's values for the runbook's parameters: ``default`` ones it has, then its own.
        A name the runbook does not have, or a value its parameter refuses (unless ``overridden``
        by the command line), is a located "misconfigured" error of opsctl.yaml (exit 4)."""
        shared = {k: v for k, v in (self.params.get("default") or {}).items() if k in runbook.params}
        own = self.params.get(runbook.id) or {}
        unknown = sorted(set(own) - set(runbook.params))
        if unknown:
            raise ConfigError(f"{self._at(runbook.id, unknown[0])}: misconfigured: {runbook.id} has no "
                              f"parameter {unknown[0]!r} (parameters: "
                              f"{', '.join(runbook.params) or 'none'})")
        for scope, values in (("default", shared), (runbook.id, own)):
            for k, v in values.items():
                if k in overridden or (scope == "default" and k in own):
                    continue
                try:
                    runbook.params[k].coerce(v)
                except UsageError as e:
                    raise ConfigError(f"{self._at(scope, k)}: misconfigured: {runbook.id}: "
                                      f"{e.message}") from None
        return {**shared, **own}

    def _at(self, scope: str, name: str) -> str:
        return self.param_at.get((scope, name)) or \
            f"{self.source}: environments.{self.name}.params.{scope}.{name}"

    def contact(self, role: str) -> str:
        """Who an escalation role ("Platform Lead") is here: ``settings.escalation.platform_lead``
        (the role's name in snake case, or as written), "" when the environment does not say."""
        contacts = self.settings.get("escalation")
        if not isinstance(contacts, dict):
            return ""
        wanted = {role_key(role), role.strip().lower()}
        who = next((v for k, v in contacts.items() if str(k).strip().lower() in wanted), "")
        return ", ".join(map(str, who)) if isinstance(who, list) else str(who or "")

    def max_applies(self, runbook_id: str) -> int | None:
        limit = self.max_applies_per_hour
        if isinstance(limit, dict):
            return limit.get(runbook_id, limit.get("default"))
        return limit


def role_key(role: str) -> str:
    """An escalation role as a settings key: "Platform Lead" -> platform_lead."""
    return re.sub(r"[^a-z0-9]+", "_", role.strip().lower()).strip("_")


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


def _misconfigured(source: Any, path: tuple[str | int, ...], message: str, key: bool = False) -> ConfigError:
    loc = source.locate(path, key=key)
    return ConfigError(f"{loc}: misconfigured: {message}")


def _read(path: Path) -> dict[str, Any]:
    """opsctl.yaml as data, every problem a located one-line "misconfigured" error (exit 4)."""
    from opsctl.loader import load_text

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: misconfigured: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        line = text_line = 1
        try:
            raw = path.read_bytes()[: e.start]
            line = raw.count(b"\n") + 1
            text_line = e.start - (raw.rfind(b"\n") + 1) + 1
        except OSError:
            pass
        raise ConfigError(f"{path}:{line}:{text_line}: misconfigured: not UTF-8 text (byte offset "
                          f"{e.start})") from None
    doc = load_text(text, str(path))
    if doc.errors:
        first = doc.errors[0]
        raise ConfigError(f"{first.location}: misconfigured: {first.message}".replace("\n", " "))
    data, src = doc.data, doc.source
    _SOURCES[str(path)] = src
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _misconfigured(src, (), "expected a mapping with an 'environments' mapping")
    unknown = sorted(set(data) - {"default_environment", "environments"})
    if unknown:
        raise _misconfigured(src, (unknown[0],), f"unknown key {unknown[0]!r} (expected "
                             "default_environment, environments)", key=True)
    if data.get("default_environment") is not None and not isinstance(data["default_environment"], str):
        raise _misconfigured(src, ("default_environment",), "default_environment must be a name (a string)")
    envs = data.get("environments")
    if envs is None:
        return {**data, "environments": {}}
    if not isinstance(envs, dict):
        raise _misconfigured(src, ("environments",), "environments must be a mapping of name -> settings")
    for name, env in envs.items():
        _check_env(src, name, env)
    return data


def _check_env(src: Any, name: str, env: Any) -> None:
    at = ("environments", name)
    if env is None:
        return
    if not isinstance(env, dict):
        raise _misconfigured(src, at, f"environment {name!r} must be a mapping of sections")
    for key, value in env.items():
        where = (*at, key)
        if key == "protected":
            if not isinstance(value, bool):
                raise _misconfigured(src, where, f"protected must be true or false, got {value!r}")
        elif key == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
                raise _misconfigured(src, where, f"tags must be a list of names, got {value!r}")
        elif key == "max_applies_per_hour":
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for rb_id, n in items:
                if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                    sub = where if rb_id is None else (*where, rb_id)
                    raise _misconfigured(src, sub, "max_applies_per_hour must be a positive integer, or a "
                                         f"mapping of runbook id (or default) to one; got {n!r}")
        elif key == "params":
            if value is not None and not isinstance(value, dict):
                raise _misconfigured(src, where, "params must be a mapping of runbook id (or default) "
                                     "to {parameter: value}")
            for rb_id, values in (value or {}).items():
                if rb_id != "default" and not re.fullmatch(r"rb-[0-9]{3,}", str(rb_id)):
                    raise _misconfigured(src, (*where, rb_id), f"params: {rb_id!r} is neither a runbook "
                                         "id (rb-NNN) nor default", key=True)
                if values is not None and not isinstance(values, dict):
                    raise _misconfigured(src, (*where, rb_id), f"params.{rb_id} must be a mapping of "
                                         "parameter -> value")
                for pname, pvalue in (values or {}).items():
                    if isinstance(pvalue, (dict, list)):
                        raise _misconfigured(src, (*where, rb_id, pname), f"params.{rb_id}.{pname} must "
                                             "be a single value (string, number or boolean)")
        elif key in BACKENDS or key == "settings":
            if value is not None and not isinstance(value, dict):
                raise _misconfigured(src, where, f"section {key!r} must be a mapping, got "
                                     f"{type(value).__name__}")
            if key in BACKENDS:
                for setting, v in (value or {}).items():
                    problem = _setting_problem(setting, v)
                    if problem:
                        raise _misconfigured(src, (*where, setting), problem)
            if key == "notify" and value:
                from opsctl.messages import problems

                for path, message in problems(value)[:1]:
                    raise _misconfigured(src, (*where, *path), f"notify: {message}")
        else:
            raise _misconfigured(src, where, f"environment {name!r}: unknown section {key!r}; expected "
                                 f"settings, tags, params, protected, max_applies_per_hour or one of "
                                 f"{', '.join(BACKENDS)}", key=True)


# what opsctl itself reads from a backend section, checked when the file is read: a typo is a located
# exit 4 here, not an internal error in the first step that connects (other keys are the client
# library's own options, which the backend that receives them checks)
_SECONDS = frozenset({"connect_timeout", "statement_timeout", "timeout", "read_timeout"})
_TEXT = frozenset({"dsn", "url", "host", "user", "username", "dbname", "database", "password",
                   "read_only_role", "region", "profile", "endpoint_url", "kubeconfig", "context",
                   "security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                   "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "token",
                   "pagerduty_secret", "slack_webhook_url", "channel"})


def _setting_problem(setting: Any, value: Any) -> str:
    """Why a backend setting's value cannot be used ("" when it can); a secret is never echoed."""
    if not isinstance(setting, str):
        return "setting names are strings"
    if value is None:
        return ""
    raw = value
    if isinstance(value, str) and "${" in value:
        value = _expand(value)
    if setting in _SECONDS:
        try:
            seconds = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            seconds = float("nan")
        if not (0 < seconds <= 86_400):  # also refuses nan and inf
            return f"must be a number of seconds above 0 (at most a day), got {raw!r}"
    elif setting == "port":
        if isinstance(value, bool) or not str(value).isdigit() or not 0 < int(str(value)) < 65536:
            return f"must be a port number (1-65535), got {raw!r}"
    elif setting == "db":
        if isinstance(value, bool) or not str(value).isdigit():
            return f"must be a database number (0, 1, ...), got {raw!r}"
    elif setting == "bootstrap_servers":
        hosts = value if isinstance(value, list) else [value]
        if not hosts or not all(isinstance(h, str) and h.strip() for h in hosts):
            return "must be host:port text or a list of them"
    elif setting in _TEXT and not isinstance(value, str):
        return f"must be text, got {type(value).__name__}"
    return ""


_SECRETISH = ("password", "secret", "token", "webhook", "dsn", "url", "key")
_DSN_PASSWORD = re.compile(r"(?:^|[\s?&])password\s*=\s*(?:'((?:[^'\\]|\\.)*)'|([^\s&']+))", re.I)
# the standard variables that can hold a credential (the backends' fallbacks when the environment
# has no section for them)
_SECRET_VARS = {"PGPASSWORD": "password", "OPSCTL_SLACK_WEBHOOK_URL": "slack_webhook_url",
                "DATABASE_URL": "dsn", "REDIS_URL": "url", "AWS_SECRET_ACCESS_KEY": "secret",
                "AWS_SESSION_TOKEN": "token", "REDISCLI_AUTH": "password"}


def _dsn_passwords(dsn: str) -> list[str]:
    """The passwords of a libpq keyword DSN (password='...') or of a URL's query (?password=...)."""
    return [re.sub(r"\\(.)", r"\1", quoted) or plain for quoted, plain in _DSN_PASSWORD.findall(dsn)]


def _register_secrets(backends: dict[str, dict[str, Any]]) -> None:
    """Credentials of the environment never reach an output (errors.mask)."""
    from urllib.parse import urlsplit

    from opsctl.errors import register_secret

    for section in backends.values():
        for k, v in section.items():
            if not isinstance(v, str) or not v or not any(w in k.lower() for w in _SECRETISH):
                continue
            if "url" in k.lower() or "dsn" in k.lower():
                try:
                    pw = urlsplit(v).password
                except ValueError:
                    pw = None
                # libpq's keyword form (password=...) and URL query parameters (?password=...)
                register_secret(*(p for p in [pw, *_dsn_passwords(v)] if p))
                if "webhook" in k.lower():  # the whole URL is the secret, with or without scheme
                    register_secret(v, v.split("://", 1)[-1])
            else:
                register_secret(v)


_SOURCES: dict[str, Any] = {}  # opsctl.yaml path -> the source map of its last reading


def _config() -> tuple[Path | None, dict[str, Any]]:
    path = next((p for p in config_paths() if p.is_file()), None)
    return path, (_read(path) if path else {})


def _param_positions(path: Path | None, env: str, params: Any) -> dict[tuple[str, str], str]:
    src = _SOURCES.get(str(path))
    if src is None or not isinstance(params, dict):
        return {}
    return {(str(scope), str(name)): str(src.locate(("environments", env, "params", scope, name)))
            for scope, values in params.items() if isinstance(values, dict) for name in values}


def environment_names() -> list[str]:
    """The environments of opsctl.yaml, in file order (empty without one)."""
    return list(_config()[1].get("environments") or {})


def select_environments(names: list[str] | None = None, *, all_envs: bool = False,
                        tags: list[str] | None = None) -> list[Environment]:
    """The environments a fan-out runs in: the named ones (in the order given, each once), every
    environment (``all_envs``), and/or those carrying every one of ``tags``; at least one, or a
    usage error saying which names exist.  No selector at all: the one default environment."""
    path, data = _config()
    envs: dict[str, Any] = data.get("environments") or {}
    if not names and not all_envs and not tags:
        return [load_environment(None)]
    where = str(path) if path else "no opsctl.yaml found"
    chosen: list[str] = []
    for name in names or []:
        if name not in envs:
            raise UsageError(f"unknown environment {name!r} ({where}; known: "
                             f"{', '.join(sorted(envs)) or 'none'})")
        if name not in chosen:
            chosen.append(name)
    if all_envs or tags:
        want = set(tags or ())
        for name, env in envs.items():
            have = set((env or {}).get("tags") or ())
            if want <= have and name not in chosen:
                chosen.append(name)
    if not chosen:
        what = f"tagged {', '.join(sorted(set(tags or ())))}" if tags else "at all"
        raise UsageError(f"no environment {what} ({where}; environments and their tags: "
                         + (", ".join(f"{n} [{', '.join((e or {}).get('tags') or ())}]"
                                      for n, e in envs.items()) or "none") + ")")
    return [load_environment(n) for n in chosen]


def load_environment(name: str | None = None) -> Environment:
    path, data = _config()
    envs: dict[str, Any] = data.get("environments") or {}
    name = name or os.environ.get("OPSCTL_ENV") or data.get("default_environment")
    _register_secrets({"env": {key: os.environ[var] for var, key in _SECRET_VARS.items()
                               if os.environ.get(var)}})
    if not name:
        return Environment(name="default", source="environment variables")
    if name not in envs:
        known = ", ".join(sorted(envs)) or "none"
        where = str(path) if path else "no opsctl.yaml found"
        raise UsageError(f"unknown environment {name!r} ({where}; known: {known})")
    raw = _expand(envs[name] or {})
    backends = {k: dict(v or {}) for k, v in raw.items() if k in BACKENDS}
    _register_secrets(backends)
    return Environment(name=name, settings=dict(raw.get("settings") or {}), backends=backends,
                       source=str(path), protected=bool(raw.get("protected", False)),
                       max_applies_per_hour=raw.get("max_applies_per_hour"),
                       tags=tuple(raw.get("tags") or ()),
                       params={str(k): dict(v or {}) for k, v in (raw.get("params") or {}).items()},
                       param_at=_param_positions(path, name, envs[name].get("params")))
