"""The warm-run cache of `opsctl validate`: reused only for the same file, the same opsctl and the
same libraries; never the reason an error goes unreported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import opsctl
from opsctl import catalog, validation

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
