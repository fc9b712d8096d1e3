"""A sandbox command is stopped by its limits, and the verdict says which one: cancellation
within seconds, the time limit, the memory limit (told from the engine's OOM counter), a signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from restore_tests import sandbox
from restore_tests.errors import SandboxError
from tests.conftest import (
    PASSWORD,
    PASSWORD_VARIABLE,
    ROOT,
    assert_no_leftovers,
    history_rows,
    run_cli,
    write_scenario,
)

pytestmark = pytest.mark.sandbox
ONE_RESTIC = pytest.mark.parametrize("restic_binary", ["0.18"], indirect=True)


def environment(repository) -> dict[str, str]:
    return {PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary}


def sandbox_section(*commands: list[str], **settings: str) -> str:
    lines = [f"  {name}: {value}" for name, value in settings.items()]
    lines += ["  commands:"] + [f"    - {json.dumps(command)}" for command in commands]
    return "sandbox:\n" + "\n".join(lines) + "\n"


def command_reasons(history_url: str) -> list[str]:
    [row] = history_rows(history_url)
    return [check["reason"] for check in row["checks"] if check["name"].startswith("sandbox: ")]


@ONE_RESTIC
def test_sigterm_during_a_sandbox_command_stops_the_check_within_seconds(
    repository, tmp_path, history_url
):
    scenario = write_scenario(
        tmp_path, "sleepy", str(repository.path), extra=sandbox_section(["sleep", "600"])
    )
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "check", str(scenario), "--db", history_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **environment(repository)},
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "running sandbox: sleep 600" in line:
            break
    time.sleep(0.5)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    stopped_after = time.monotonic() - signalled
    assert process.returncode == 130
    assert stopped_after < 15, f"stopped {stopped_after:.1f}s after SIGTERM"
    assert stdout.strip() == "ERROR sleepy  interrupted during verify"
    [row] = history_rows(history_url)
    assert row["status"] == "error" and row["reason"] == "interrupted during verify"
    assert_no_leftovers()


@ONE_RESTIC
def test_an_out_of_memory_kill_is_reported_with_the_memory_limit(repository, tmp_path, history_url):
    # One process that grows until the kernel kills it: with a pipeline, the OOM killer may
    # take a child first, and the shell then prints "Killed" before it is killed itself.
    hungry = ["sh", "-c", "x=x; while :; do x=$x$x; done"]
    scenario = write_scenario(
        tmp_path, "hungry", str(repository.path), extra=sandbox_section(hungry, memory="32m")
    )
    result = run_cli("check", str(scenario), "--db", history_url, env=environment(repository))
    reason = "sandbox command sh exited 137 (killed: out of memory, limit 32 MiB): no output"
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == f"FAIL  hungry  {reason}"
    assert command_reasons(history_url) == [reason]
    assert_no_leftovers()


@ONE_RESTIC
def test_the_time_limit_and_other_kills_are_told_apart(repository, tmp_path, history_url):
    commands = (
        ["sleep", "30"],
        ["sh", "-c", "kill -KILL $$"],
        ["sh", "-c", "echo segfault >&2; kill -SEGV $$"],
    )
    scenario = write_scenario(
        tmp_path,
        "killed",
        str(repository.path),
        extra=sandbox_section(*commands, command_timeout="2s"),
    )
    started = time.monotonic()
    result = run_cli("check", str(scenario), "--db", history_url, env=environment(repository))
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 30
    assert command_reasons(history_url) == [
        "sandbox command sleep exited 137 (killed: time limit 2s): no output",
        "sandbox command sh exited 137 (killed by SIGKILL): no output",
        "sandbox command sh exited 139 (killed by SIGSEGV): segfault",
    ]
    assert_no_leftovers()


def test_a_command_the_images_timeout_does_not_stop_is_given_up_past_its_time_limit(tmp_path):
    """The host keeps its own deadline: here the `timeout` found first ignores its limit."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "timeout").write_text("#!/bin/sh\nsleep 600\n")
    (tmp_path / "bin" / "timeout").chmod(0o755)
    client = sandbox.connect()
    run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.urandom(3).hex()}"
    spec = sandbox.SandboxSpec(
        "restore-tests/sandbox:bookworm",
        run_id,
        "stuck",
        memory_bytes=64 * 1024**2,
        pids=32,
        cpus=1,
        read_only_mounts={str(tmp_path / "bin"): "/opt/bin"},
    )
    with sandbox.sandbox(client, spec) as box:
        started = time.monotonic()
        with pytest.raises(SandboxError) as raised:
            box.exec(["true"], 1, environment={"PATH": "/opt/bin:/usr/bin:/bin"})
        waited = time.monotonic() - started
    assert str(raised.value) == (
        "sandbox command true still ran 10s past its time limit of 1s: "
        "the image's timeout did not stop it"
    )
    assert 11 <= waited < 14
    left = client.containers.list(all=True, filters={"label": f"{sandbox.LABEL_RUN}={run_id}"})
    assert left == []
