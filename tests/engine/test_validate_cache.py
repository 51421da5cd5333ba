"""The warm-run cache of `opsctl validate`: reused only for the same file, the same opsctl and the
same libraries; never the reason an error goes unreported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import opsctl
from opsctl import catalog, loader, validation

GOOD = ("id: rb-901\ntitle: t\nseverity: P3\nsummary: s\n"
        "diagnose:\n  - {id: a, action: core.echo, with: {value: 1}}\n")
BAD = GOOD.replace("rb-901", "rb-902").replace("P3", "P9")


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("OPSCTL_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "rb-901-good.yaml").write_text(GOOD)
    (tmp_path / "rb-902-bad.yaml").write_text(BAD)
    return [str(tmp_path / "rb-901-good.yaml"), str(tmp_path / "rb-902-bad.yaml")]


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    checked: list[str] = []
    real = catalog.check_for_validate

    def check_for_validate(data: bytes, path: str):  # type: ignore[no-untyped-def]
        checked.append(Path(path).name)
        return real(data, path)

    monkeypatch.setattr(catalog, "check_for_validate", check_for_validate)
    return checked


def test_a_warm_run_reuses_verdicts_and_reports_the_same_errors(files: list[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cold = [str(e) for e in validation.validate_files(files, jobs=1)]
    assert len(cold) == 1 and cold[0].startswith(f"{files[1]}:3:11: severity: ")
    checked = _counting(monkeypatch)
    assert [str(e) for e in validation.validate_files(files, jobs=1)] == cold
    assert checked == []  # nothing parsed again
    Path(files[0]).write_text(GOOD.replace("title: t", "title: changed"))
    assert [str(e) for e in validation.validate_files(files, jobs=1)] == cold
    assert checked == ["rb-901-good.yaml"]  # only the changed file


def test_no_cache_checks_everything(files: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    validation.validate_files(files, jobs=1)
    checked = _counting(monkeypatch)
    validation.validate_files(files, jobs=1, use_cache=False)
    assert checked == ["rb-901-good.yaml", "rb-902-bad.yaml"]


def test_another_opsctl_or_registry_never_reuses_a_verdict(files: list[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    validation.validate_files(files, jobs=1)
    [old] = (tmp_path / "cache").glob("validate-*.json")
    # an upgrade, or an action whose schema changed: the source of opsctl is different
    fake = tmp_path / "pkg" / "opsctl"
    shutil.copytree(Path(opsctl.__file__).parent, fake, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(opsctl, "__file__", str(fake / "__init__.py"))
    before = validation.fingerprint()
    schema_file = fake / "actions" / "core.py"
    schema_file.write_text(schema_file.read_text() + "\n# a changed action\n")
    assert validation.fingerprint() != before
    checked = _counting(monkeypatch)
    errors = [str(e) for e in validation.validate_files(files, jobs=1)]
    assert checked == ["rb-901-good.yaml", "rb-902-bad.yaml"]
    assert len(errors) == 1
    assert not old.exists()  # the stale verdicts are gone


def test_a_corrupt_cache_is_ignored(files: list[str], tmp_path: Path) -> None:
    validation.validate_files(files, jobs=1)
    [cache] = (tmp_path / "cache").glob("validate-*.json")
    cache.write_text('{"version": 1, "entries": {"x": [[1, 1]]}, ')
    assert len(validation.validate_files(files, jobs=1)) == 1


def test_files_spread_over_workers_give_the_same_errors_in_order(tmp_path: Path) -> None:
    files = []
    for i in range(80):
        path = tmp_path / f"rb-{500 + i}-x.yaml"
        path.write_text(GOOD.replace("rb-901", f"rb-{500 + i}").replace("P3", "P3" if i % 3 else "P7"))
        files.append(str(path))
    serial = [str(e) for e in validation.validate_files(files, jobs=1, use_cache=False)]
    parallel = [str(e) for e in validation.validate_files(files, jobs=2, use_cache=False)]
    assert parallel == serial and len(serial) == 27


CLAIMS = GOOD.replace("summary: s\n", "summary: s\ntriggers: [SameAlert]\n")


def test_alerts_claimed_twice_are_reported_cold_and_warm_from_one_parse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_CACHE_DIR", str(tmp_path / "cache"))
    files = []
    for rid in ("rb-901", "rb-902"):
        path = tmp_path / f"{rid}-x.yaml"
        path.write_text(CLAIMS.replace("rb-901", rid))
        files.append(str(path))
    loads: list[str] = []
    real = loader.load_bytes
    monkeypatch.setattr(loader, "load_bytes", lambda data, f: loads.append(f) or real(data, f))
    cold = [str(e) for e in validation.validate_files(files, jobs=1)]
    assert cold == [f"{files[1]}:5:12: triggers[0]: alert 'SameAlert' is also claimed by rb-901 "
                    f"({files[0]}:5:12); give both triggers a 'when' that separates them "
                    "(e.g. on labels.severity)"]
    # each file parsed once: the claims come out of the same check; their positions are needed
    # only for the report, and only then are the two files named in it read again
    assert loads[:2] == files and sorted(loads[2:]) == files
    checked = _counting(monkeypatch)
    loads.clear()
    assert [str(e) for e in validation.validate_files(files, jobs=1)] == cold
    assert checked == [] and sorted(loads) == files  # warm: nothing checked, the two located

    files[1] = str(tmp_path / "rb-902-x.yaml")
    Path(files[1]).write_text(CLAIMS.replace("rb-901", "rb-902").replace("SameAlert", "Other"))
    loads.clear()
    assert validation.validate_files(files, jobs=1) == [] and loads == files[1:]


def test_the_cache_hashes_the_bytes_the_loader_reads() -> None:
    assert validation._READ_LIMIT == loader.MAX_FILE_BYTES + 1


def test_list_and_show_validate_what_they_print(files: list[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from opsctl.cli.catalog_cmds import list_runbooks, procedure
    from opsctl.cli.run_cmd import Output
    from opsctl.errors import ValidationFailed

    monkeypatch.setattr(catalog, "search_dirs", lambda: [tmp_path])
    list_runbooks(Output.json)
    rows = {r["path"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[files[0]] == {"id": "rb-901", "title": "t", "severity": "P3", "triggers": [],
                              "options": [], "path": files[0], "valid": True}
    assert rows[files[1]]["valid"] is False and rows[files[1]]["title"] == "INVALID (1 errors)"
    shown = catalog.procedure("rb-901", procedure)
    assert shown.startswith("# rb-901: t (P3)") and "core.echo" in shown
    checked = _counting(monkeypatch)
    assert catalog.procedure("rb-901", procedure) == shown  # the second show: from the cache
    with pytest.raises(ValidationFailed) as bad:
        catalog.procedure("rb-902", procedure)
    assert [str(e) for e in bad.value.errors] == [f"{files[1]}:3:11: severity: expected one of "
                                                   "P0, P1, P2, P3, P4, got 'P9'"]
    assert checked == []
    Path(files[0]).write_text(GOOD.replace("P3", "P8"))  # broken since: both see it at once
    list_runbooks(Output.json)
    assert not {r["path"]: r for r in json.loads(capsys.readouterr().out)}[files[0]]["valid"]
    with pytest.raises(ValidationFailed):
        catalog.procedure("rb-901", procedure)
    assert checked == ["rb-901-good.yaml"]
