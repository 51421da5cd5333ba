"""The `opsctl` fixture's fork server (tests/fixtures/forkserver.py) answers as a fresh interpreter:
same exit code and output, its own process, and a fresh interpreter wherever the imports would
have read the environment differently."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine.helpers import rb, run_logs, step_started
from tests.fixtures.core import REPO, Result, base_env, run_cli
from tests.fixtures.forkserver import ForkServer
from tests.timing import budget


@pytest.fixture
def server(opsctl_forkserver: ForkServer | None) -> ForkServer:
    if opsctl_forkserver is None:
        pytest.skip("the fork server is off (OPSCTL_TEST_FRESH) or could not start")
    return opsctl_forkserver


def _both(server: ForkServer, env: dict[str, str], cwd: Path, *args: str, input: str | None = None
          ) -> tuple[Result, Result]:
    forked_before = server.forked
    fork = run_cli(server, args, env, cwd, input=input, timeout=budget(60))
    assert server.forked == forked_before + 1, "the run did not go through the fork server"
    fresh = run_cli(server, args, env, cwd, input=input, timeout=budget(60), fresh=True)
    return fork, fresh


def test_a_fork_answers_as_a_fresh_interpreter(server: ForkServer, opsctl_env: dict[str, str],
                                               tmp_path: Path) -> None:
    for args in (("--version",), ("run", "rb-999-none"), ("run", rb("rb-401"), "-p", "nope"),
                 ("run", rb("rb-401"), "-p", f"target={tmp_path / 'flag'}"), ("list",)):
        fork, fresh = _both(server, opsctl_env, tmp_path, *args)
        assert fork.code == fresh.code, (args, fork, fresh)
        # the refused interactive run prints its run id and step durations: compared without them
        assert _without_run_ids(fork.stdout) == _without_run_ids(fresh.stdout), args
        assert fork.stderr == fresh.stderr, args
    assert fork.code == 0 and "rb-014" in fork.stdout  # the last: `list`, the catalogue


def _without_run_ids(text: str) -> list[str]:
    """The lines but those with a run id (a timestamp), step durations ("0.1 s") blanked."""
    return [re.sub(r"\b\d+(\.\d+)? s\b", "N s", line) for line in text.splitlines()
            if "run=" not in line and "opsctl report" not in line]


def test_a_fork_runs_in_its_cwd_with_its_env_and_stdin(server: ForkServer, opsctl_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    target = tmp_path / "flag"
    r = run_cli(server, ("run", rb("rb-401"), "-o", "json", "--yes", "-p", f"target={target}"),
                opsctl_env, tmp_path, timeout=budget(60))
    assert r.code == 0, r.output
    assert target.read_text() == "on" and json.loads(r.stdout)["message"] == "verified"
    # the run log went to this test's OPSCTL_STATE_DIR, not the server's environment
    assert len(run_logs(opsctl_env)) == 1
    # stdin is the caller's pipe: not a terminal, so the confirmation is refused (exit 3)
    r = run_cli(server, ("run", rb("rb-401"), "-p", f"target={tmp_path / 'other'}"), opsctl_env,
                tmp_path, input="y\n", timeout=budget(60))
    assert r.code == 3 and not (tmp_path / "other").exists(), r.output


def test_environment_read_at_import_gets_a_fresh_interpreter(server: ForkServer,
                                                              opsctl_env: dict[str, str]) -> None:
    assert server.usable(opsctl_env)  # OPSCTL_STATE_DIR, XDG_CONFIG_HOME: read at run time only
    assert server.usable({**opsctl_env, "KUBECONFIG": "/x"})  # set again in each fork
    assert server.import_keys and "HOME" in server.import_keys  # botocore's cache paths
    for key, value in (("HOME", "/elsewhere"), ("PYTHONPATH", "/x"), ("LC_ALL", "C"), ("TZ", "UTC")):
        assert not server.usable({**opsctl_env, key: value}), key


def test_timeout_kills_the_fork(server: ForkServer, opsctl_env: dict[str, str], tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        server.run(["run", rb("rb-406"), "-p", "seconds=120"], opsctl_env, tmp_path, timeout=3)
    assert time.monotonic() - started < budget(30)
    pid = server.last_pid
    assert pid is not None and step_started(opsctl_env, "long_wait")
    deadline = time.monotonic() + budget(30)
    while time.monotonic() < deadline and _alive(pid):  # killed, then reaped by its runner
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_server_that_went_away_leaves_the_runs_to_fresh_interpreters(opsctl_env: dict[str, str],
                                                                       tmp_path: Path) -> None:
    gone = ForkServer(tmp_path, base_env(), REPO)
    try:
        assert gone.ready(budget(60))
    finally:
        gone.stop()
    r = run_cli(gone, ("--version",), opsctl_env, tmp_path, timeout=budget(60))
    assert r.code == 0 and r.stdout.startswith("opsctl ") and (gone.forked, gone.fresh) == (0, 1)
    gone.import_keys = set()  # as if it were usable: the connection is refused, the run goes fresh
    gone.proc.poll = lambda: None  # type: ignore[method-assign]
    r = run_cli(gone, ("--version",), opsctl_env, tmp_path, timeout=budget(60))
    assert r.code == 0 and r.stdout.startswith("opsctl ") and (gone.forked, gone.fresh) == (0, 2)
