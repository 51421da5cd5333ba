"""The shipped runbooks fit any company: no company names, hosts, e-mail addresses or ticket systems
of the documents they were written from, no citations of those documents in what a user reads, and
a team's own values (parameters, escalation contacts) come from its opsctl.yaml environment."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from opsctl import actions, catalog, config
from tests.fixtures.core import REPO, RUNBOOK_FILES, Result

# The source documents' companies, their hosts, channels, pager services and ticket system; an
# e-mail address; a citation of a source document ("seed 001 §1.4", "§3.3.2").
FORBIDDEN = re.compile(
    r"plooral|techbra|payments-platform|kafka-kafka|order-service|billing-service|inventory-service"
    r"|pagerduty-payments|slack-alerts|prod-alerts|incidente|jira|confluence"
    r"|(?<![\w.%+/-])[A-Za-z0-9._%+-]+@(?!example\.)[A-Za-z0-9-]+\.[A-Za-z.]{2,}"  # not in a URL
    r"|\bseeds?\b(?! ?[=(])|§", re.I)
USER_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted((REPO / "docs" / "backends").glob("*.md"))]
EXAMPLE = REPO / "docs" / "examples" / "opsctl.yaml"


def hits(text: str) -> list[str]:
    return [f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}" for m in FORBIDDEN.finditer(text)]


def test_the_pattern_finds_what_it_must() -> None:
    """The grep itself can fail: each kind of leak is caught."""
    for leak in ("default: plooral-cluster", "contact: platform-lead@plooral.com", "(seed 001 §1.4)",
                 "Seed 004: lag", "telnet kafka-kafka 9092", "ticket in JIRA", "§3.3.2",
                 "group: order-service-group", "ops@acme.co.uk"):
        assert hits(leak), leak
    assert not hits("random.seed(3); seed=4; postgresql://ops@db.internal:5432; lead@example.org")


@pytest.mark.parametrize("path", RUNBOOK_FILES, ids=lambda p: p.name[:6])
def test_runbook_defaults_and_messages_name_no_company(path: Path) -> None:
    """The whole file: defaults, descriptions, titles, finding messages, escalation, references."""
    assert not hits(path.read_text(encoding="utf-8")), hits(path.read_text(encoding="utf-8"))
    rb = catalog.load(str(path))
    assert all(not e.get("contact") for e in rb.escalation), "contacts come from the environment"


def test_user_docs_and_action_docs_name_no_company() -> None:
    found = {str(p.relative_to(REPO)): hits(p.read_text(encoding="utf-8")) for p in USER_DOCS}
    for name, cls in actions.load_all().items():
        found[f"action {name}"] = hits(f"{cls.summary}\n{cls.__doc__ or ''}")
    assert {k: v for k, v in found.items() if v} == {}


def test_the_example_environment_fits_the_shipped_runbooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/examples/opsctl.yaml loads, and every runbook's parameters it sets exist."""
    monkeypatch.setenv("OPSCTL_CONFIG", str(EXAMPLE))
    runbooks = {p.name[:6]: catalog.load(str(p)) for p in RUNBOOK_FILES}
    for env_name in ("plooral-prod", "techbra-test"):
        env = config.load_environment(env_name)
        named = set(env.params) - {"default"}
        assert named and named <= set(runbooks), named - set(runbooks)
        for rb_id in named:
            assert env.params_for(runbooks[rb_id])
        assert env.contact("platform lead") and env.contact("Engineering Manager")
    assert config.load_environment("plooral-prod").params_for(runbooks["rb-011"])["cluster"] == \
        "plooral-cluster"


def _write(tmp_path: Path, text: str) -> dict[str, str]:
    (tmp_path / "opsctl.yaml").write_text(text, encoding="utf-8")
    return {"OPSCTL_CONFIG": str(tmp_path / "opsctl.yaml")}


def test_show_names_the_environments_contacts_and_values(opsctl: Callable[..., Result],
                                                         tmp_path: Path) -> None:
    env = _write(tmp_path, "environments:\n  prod:\n    params:\n      rb-011: {service: api}\n"
                           "    settings:\n"
                           "      escalation: {platform_lead: [lead@example.org, '#platform']}\n")
    shown = opsctl("show", "rb-011", "--env", "prod", env=env)
    assert shown.code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "Platform Lead lead@example.org, #platform" in text
    assert "in prod: 'api'" in text
    assert "Engineering Manager (no contact: set environments.prod.settings.escalation.engineering_manager" \
        in text
    bare = opsctl("show", "rb-011")
    bare_text = " ".join(bare.stdout.split())
    assert bare.code == 0 and "no contact: set environments.NAME.settings.escalation" in bare_text


def test_environment_params_reach_the_run_and_are_checked(opsctl: Callable[..., Result],
                                                          tmp_path: Path) -> None:
    """An environment value is coerced like -p (a bad one is opsctl.yaml's located "misconfigured"
    error, exit 4, unless -p gives the value), -p wins over it, and a parameter the runbook lacks
    is a located "misconfigured" error (exit 4)."""
    env = _write(tmp_path, "environments:\n  shop:\n    params:\n      default: {namespace: shop, nope: 1}\n"
                           "      rb-008: {group: orders, lag_threshold: lots}\n")
    bad = opsctl("run", "rb-008", "--env", "shop", "--dry-run", env=env)
    assert bad.code == 4 and "Traceback" not in bad.output, bad.output
    assert re.search(r"opsctl\.yaml:5:\d+: environments\.shop\.params\.rb-008\.lag_threshold: "
                     r"misconfigured: rb-008: parameter 'lag_threshold': expected an integer",
                     " ".join(bad.stderr.split())), bad.stderr
    missing = opsctl("run", "rb-012", "--env", "shop", "--dry-run", env=env)
    assert missing.code == 2 and "missing required parameter 'function'" in missing.stderr
    env = _write(tmp_path, "environments:\n  shop:\n    params:\n      rb-008: {groop: orders}\n")
    unknown = opsctl("run", "rb-008", "--env", "shop", "--dry-run", "-p", "group=x", env=env)
    assert unknown.code == 4 and re.search(r"opsctl\.yaml:4:\d+: environments\.shop\.params\.rb-008\."
                                           r"groop: misconfigured: rb-008 has no parameter 'groop'",
                                           " ".join(unknown.stderr.split())), unknown.stderr
    env = _write(tmp_path, "environments:\n  shop:\n    params: [1]\n")
    listed = opsctl("run", "rb-008", "--env", "shop", "--dry-run", env=env)
    assert listed.code == 4 and "opsctl.yaml:3:" in listed.stderr and "misconfigured" in listed.stderr


def test_a_bad_environment_value_given_on_the_command_line_is_not_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in _write(tmp_path, "environments:\n  shop:\n    params:\n"
                                 "      default: {lag_threshold: many}\n"
                                 "      rb-008: {group: orders, lag_threshold: lots}\n").items():
        monkeypatch.setenv(k, v)
    rb = catalog.load("rb-008")
    env = config.load_environment("shop")
    assert env.params_for(rb, overridden={"lag_threshold": "5"})["group"] == "orders"
    with pytest.raises(config.ConfigError, match=r"opsctl\.yaml:5:\d+: .*rb-008\.lag_threshold: "
                                                 r"misconfigured"):
        env.params_for(rb)
