"""The engine a run talks to: the one DOCKER_HOST or DOCKER_CONTEXT names, for the run and for
its detached cleanup; losing it mid-run is an environment error; names and labels of sandboxes.

The engine is reached through a recording forwarder (a unix socket started by the test, relaying
to the real engine), so a request sent to the default socket instead would be seen missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import pytest

from restore_tests import sandbox
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
ENGINE_SOCKET = "/var/run/docker.sock"
REQUEST_LINE = re.compile(rb"(GET|POST|PUT|DELETE|HEAD) (/\S*) HTTP/1\.[01]\r\n")
SANDBOX_IMAGE = "restore-tests/sandbox:bookworm"


class Forwarder:
    """A unix socket relaying every connection to the engine, recording each request line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[str] = []
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(ENGINE_SOCKET)
            with self.lock:
                self.connections += [client, engine]
            threading.Thread(target=self._relay, args=(client, engine, True), daemon=True).start()
            threading.Thread(target=self._relay, args=(engine, client, False), daemon=True).start()

    def _relay(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
                if data and record:
                    self._record(data)
                if not data:
                    break
                target.sendall(data)
            except OSError:
                break
        for end in (source, target):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def _record(self, data: bytes) -> None:
        with self.lock:
            for method, path in REQUEST_LINE.findall(data):
                self.requests.append(f"{method.decode()} {path.decode()}")

    def cut(self) -> None:
        """The engine is gone: no new connection, and every open one is closed."""
        self.listener.close()
        self.path.unlink(missing_ok=True)
        with self.lock:
            for connection in self.connections:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()

    def containers(self, method: str, action: str = "") -> set[str]:
        """Ids of the containers that got this request (DELETE, or POST .../start)."""
        pattern = re.compile(rf"{method} /v[\d.]+/containers/([0-9a-f]{{64}}){action}(\?|$)")
        with self.lock:
            return {match[1] for line in self.requests if (match := pattern.match(line))}


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    folder = Path(tempfile.mkdtemp(prefix="rt-engine-", dir="/tmp"))  # socket paths are short
    relay = Forwarder(folder / "docker.sock")
    yield relay
    relay.cut()
    shutil.rmtree(folder, ignore_errors=True)


def environment(repository, **extra: str) -> dict[str, str]:
    return {PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary, **extra}


def assert_removed_through(relay: Forwarder) -> None:
    """Every sandbox started through the relay was removed through it (the reaper's DELETE)."""
    assert_no_leftovers()
    started = relay.containers("POST", "/start")
    assert len(started) == 1
    assert relay.containers("DELETE") == started, relay.requests


@ONE_RESTIC
def test_a_whole_check_through_docker_host_removes_its_sandbox_through_the_same_engine(
    repository, tmp_path, history_url, forwarder
):
    scenario = write_scenario(tmp_path, "relayed", str(repository.path))
    result = run_cli(
        "check",
        str(scenario),
        "--db",
        history_url,
        env=environment(repository, DOCKER_HOST=forwarder.url),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS  relayed  RTO ")
    assert_removed_through(forwarder)


def write_context(config: Path, name: str, host: str) -> None:
    """A docker CLI context, stored as the CLI stores it (DOCKER_CONFIG/contexts/meta/...)."""
    meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    endpoint = {"Host": host, "SkipTLSVerify": False}
    document = {"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}}
    (meta / "meta.json").write_text(json.dumps(document))
    (config / "config.json").write_text("{}")


@ONE_RESTIC
def test_a_whole_check_through_docker_context_removes_its_sandbox_through_the_same_engine(
    repository, tmp_path, history_url, forwarder
):
    config = tmp_path / "docker-config"
    write_context(config, "relayed", forwarder.url)
    scenario = write_scenario(tmp_path, "relayed", str(repository.path))
    variables = {"DOCKER_CONFIG": str(config), "DOCKER_CONTEXT": "relayed"}
    environment_without_host = {
        name: value for name, value in os.environ.items() if name != "DOCKER_HOST"
    }
    completed = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "check", str(scenario), "--db", history_url],
        capture_output=True,
        text=True,
        env={**environment_without_host, **environment(repository, **variables)},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert_removed_through(forwarder)


@ONE_RESTIC
def test_a_docker_context_that_does_not_exist_is_an_environment_error(
    repository, tmp_path, history_url
):
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text("{}")
    scenario = write_scenario(tmp_path, "nowhere", str(repository.path))
    variables = {"DOCKER_CONFIG": str(config), "DOCKER_CONTEXT": "nowhere"}
    result = run_cli(
        "check", str(scenario), "--db", history_url, env=environment(repository, **variables)
    )
    assert result.returncode == 3
    assert result.stdout.strip() == (
        "ERROR nowhere  Docker context nowhere (DOCKER_CONTEXT) does not exist"
    )


def remove_run(run_id: str) -> None:
    """Through the default socket: the run's own cleanup could not reach its engine."""
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=restore-tests.run={run_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if listed:
        subprocess.run(["docker", "rm", "-f", *listed], capture_output=True, check=True)


@ONE_RESTIC
def test_losing_the_engine_during_a_sandbox_command_is_an_environment_error(
    repository, tmp_path, history_url, forwarder
):
    scenario = write_scenario(
        tmp_path,
        "cut",
        str(repository.path),
        extra='sandbox:\n  commands:\n    - ["sleep", "30"]\n',
    )
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "check", str(scenario), "--db", history_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **environment(repository, DOCKER_HOST=forwarder.url)},
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "running sandbox: sleep 30" in line:
            break
    time.sleep(0.5)
    cut_at = time.monotonic()
    forwarder.cut()
    stdout, _ = process.communicate(timeout=60)
    reason = f"Docker engine connection lost: No such file or directory ({forwarder.url})"
    [row] = history_rows(history_url)
    remove_run(row["run_id"])
    assert process.returncode == 3
    assert time.monotonic() - cut_at < 10
    assert stdout.strip() == f"ERROR cut  {reason}"
    assert row["status"] == "error" and row["reason"] == reason
    assert_no_leftovers()


def test_sandboxes_of_one_run_with_long_scenario_names_are_distinct_and_labelled():
    client = sandbox.connect()
    run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.urandom(3).hex()}"
    spec = sandbox.SandboxSpec(
        image=SANDBOX_IMAGE,
        run_id=run_id,
        scenario="a" * 120 + "-long-scenario",
        memory_bytes=64 * 1024**2,
        pids=32,
        cpus=0.5,
    )
    with ExitStack() as stack:
        boxes = [stack.enter_context(sandbox.sandbox(client, spec)) for _ in range(2)]
        names = [box.name for box in boxes]
        labels = [box.container.labels for box in boxes]
    assert names[0] != names[1]
    for name, label in zip(names, labels, strict=True):
        assert name.startswith(f"restore-tests-{run_id}-{'a' * 64}-")
        assert len(name) <= 128 and re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", name)
        assert label[sandbox.LABEL_HOST] == socket.gethostname()
        assert label[sandbox.LABEL_PID] == str(os.getpid())
        assert label[sandbox.LABEL_RUN] == run_id
    left = client.containers.list(all=True, filters={"label": f"{sandbox.LABEL_RUN}={run_id}"})
    assert left == []
