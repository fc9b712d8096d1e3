"""The one gateway to Docker: isolated, labelled, limited sandboxes that are always removed.

A sandbox has no network, no capabilities, no new privileges, a read-only root, tmpfs scratch
space and memory/pids/CPU limits. Restored data is mounted read-only. Every container carries
labels (managed, run, scenario, expires-at, host, pid): cleanup and `prune` work from labels only.

What runs in a sandbox is untrusted: its output is read as a stream and only a bounded head and
tail are kept, waiting for it honours cancellation, and how it ended (exit, time limit, out of
memory, signal) is told from the engine's state, not guessed from the exit code.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import requests
import urllib3
from docker.context import ContextAPI
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import CancellableStream

from restore_tests import execute
from restore_tests.errors import EnvironmentUnusable, Interrupted, PreflightError, SandboxError
from restore_tests.sandbox_output import (
    STDOUT_STREAM,
    BoundedOutput,
    CountRecords,
    ExecResult,
    Output,
    OutputCut,
    count_command,
    printable,
    read_frames,
    seconds_text,
)

log = logging.getLogger(__name__)

LABEL_MANAGED = "restore-tests.managed"
LABEL_RUN = "restore-tests.run"
LABEL_SCENARIO = "restore-tests.scenario"
LABEL_EXPIRES = "restore-tests.expires-at"
LABEL_HOST = "restore-tests.host"  # socket.gethostname() of the run
LABEL_PID = "restore-tests.pid"  # its process id: prune can tell a run whose process is gone
RESTORE_MOUNT = "/restore"
SCRATCH_MOUNT = "/scratch"
DEFAULT_TTL = timedelta(hours=6)
# Variables that choose the engine: the detached reaper must remove sandboxes from the same one.
DOCKER_VARIABLES = (
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONFIG",
)
NAME_SCENARIO_CHARACTERS = 64  # restore-tests-<run id>-<scenario>-<suffix> stays under 128
POLL_SECONDS = 0.1
READY_ATTEMPT_SECONDS = 10.0  # one try of a readiness command
READY_POLL_SECONDS = 0.05  # each try is a docker exec (~0.05-0.1 s) on top
LOG_LINES_READ = 40  # of a server's log, searched for its error lines
_LOG_ERROR = re.compile(r"\b(ERROR|FATAL|PANIC)\b|\[ERROR\]")
READY_GAVE_UP = 100  # a readiness command's exit code for "the server died: stop waiting"
DEADLINE_GRACE_SECONDS = 10.0  # past a command's time limit, in case `timeout` did not kill it
EXIT_WAIT_SECONDS = 2.0  # the engine records an exit a moment after the output stream ends
OOM_COUNTER_FILES = (
    "/sys/fs/cgroup/memory.events",  # cgroup v2
    "/sys/fs/cgroup/memory/memory.oom_control",  # cgroup v1
)
# A request that never reached the engine, or a connection it dropped: not a DockerException.
ENGINE_FAILURES = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    ConnectionError,
)


def connect() -> docker.DockerClient:
    """A client for the engine that DOCKER_HOST or DOCKER_CONTEXT names (else the local one)."""
    try:
        arguments = _context_arguments()
        if arguments:
            client = docker.DockerClient(timeout=120, **arguments)
        else:
            client = docker.from_env(timeout=120)
        client.ping()
    except (DockerException, *ENGINE_FAILURES) as error:
        raise EnvironmentUnusable(f"Docker engine unreachable: {_short(error)}") from error
    return client


def _context_arguments() -> dict[str, Any]:
    """DOCKER_CONTEXT, as the docker CLI reads it, when DOCKER_HOST does not override it."""
    name = os.environ.get("DOCKER_CONTEXT")
    if os.environ.get("DOCKER_HOST") or not name:
        return {}
    context = ContextAPI.get_context(name)
    if context is None:
        raise EnvironmentUnusable(f"Docker context {name} (DOCKER_CONTEXT) does not exist")
    return {"base_url": context.Host, "tls": context.TLSConfig or False}


def docker_environment() -> dict[str, str]:
    """The variables that chose this process's engine, for a child that must use it too."""
    return {name: os.environ[name] for name in DOCKER_VARIABLES if name in os.environ}


@contextmanager
def engine_calls() -> Iterator[None]:
    """A lost connection to the engine is an environment error, whatever library raised it."""
    try:
        yield
    except DockerException:
        raise  # APIError is also a requests HTTPError: the engine answered
    except ENGINE_FAILURES as error:
        raise connection_lost(_cause(error)) from error


def connection_lost(cause: str) -> EnvironmentUnusable:
    return EnvironmentUnusable(f"Docker engine connection lost: {cause} ({engine_address()})")


def engine_address() -> str:
    """The engine this process uses, as its variables name it (for messages)."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if os.environ.get("DOCKER_CONTEXT"):
        return f"Docker context {os.environ['DOCKER_CONTEXT']}"
    return "unix:///var/run/docker.sock"


def engine_version(client: docker.DockerClient) -> str:
    with engine_calls():
        return str(client.version().get("Version", "unknown"))


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandbox looks like."""

    image: str
    run_id: str
    scenario: str
    memory_bytes: int
    pids: int
    cpus: float
    read_only_mounts: dict[str, str] = field(default_factory=dict)  # host path -> container path
    scratch_bytes: int = 256 * 1024**2
    scratch_folder: str | None = None  # a host folder mounted writable at /scratch, else tmpfs
    log_file: str | None = None  # the server's log inside the sandbox (shown on its failure)
    ttl: timedelta = DEFAULT_TTL
    user: str | None = None  # the default user of every command (root when None)
    environment: dict[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        expires = datetime.now(UTC) + self.ttl
        return {
            LABEL_MANAGED: "true",
            LABEL_RUN: self.run_id,
            LABEL_SCENARIO: self.scenario,
            LABEL_EXPIRES: expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            LABEL_HOST: socket.gethostname(),
            LABEL_PID: str(os.getpid()),
        }

    def container_name(self) -> str:
        """Run id first, then the scenario (cut), then a suffix unique to this sandbox."""
        scenario = self.scenario[:NAME_SCENARIO_CHARACTERS]
        return f"restore-tests-{self.run_id}-{scenario}-{secrets.token_hex(3)}"


class Sandbox:
    """A running, isolated container; exec() runs a program in it."""

    def __init__(self, container: Any, spec: SandboxSpec) -> None:
        self.container = container
        self.spec = spec
        self._oom_kills: int | None = None  # the engine's OOM kill counter, as last read

    @property
    def name(self) -> str:
        return str(self.container.name)

    def exec(
        self,
        argv: list[str],
        timeout: float,
        *,
        user: str | None = None,
        environment: Mapping[str, str] | None = None,
        workdir: str | None = None,
        on_stdout: Callable[[bytes], None] | None = None,
    ) -> ExecResult:
        """Run argv inside the sandbox, killed after timeout seconds (by coreutils timeout).

        user is "UID:GID" (numeric) or a name known to the image; on_stdout receives stdout as
        it arrives (only a bounded head and tail of it are kept). Raises Interrupted on
        cancellation, SandboxError when the command outlives its time limit anyway.
        """
        if self._oom_kills is None:
            self._oom_kills = self._read_oom_kills()
        limit = max(1, int(timeout))
        command = ["timeout", "-s", "KILL", str(limit), *argv]
        options = {"user": user or "", "environment": environment, "workdir": workdir}
        overdue = (
            f"sandbox command {argv[0]} still ran {DEADLINE_GRACE_SECONDS:.0f}s past its time "
            f"limit of {seconds_text(limit)}: the image's timeout did not stop it"
        )
        started = time.monotonic()
        exit_code, stdout, stderr = self._run(
            command, (limit + DEADLINE_GRACE_SECONDS, overdue), options, on_stdout
        )
        seconds = time.monotonic() - started
        _refuse_missing_timeout(self.spec.image, exit_code, stdout, stderr)
        oom_killed = self._oom_killed_since() if exit_code != 0 else False
        return ExecResult(
            exit_code, stdout, stderr, seconds, limit, self.spec.memory_bytes, oom_killed
        )

    def wait_ready(self, argv: list[str], timeout: float) -> None:
        """Poll argv until it exits 0 (a server accepting queries); SandboxError after timeout,
        or at once when argv exits READY_GAVE_UP, with its last line and the log's last lines."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            result = self.exec(argv, max(1.0, min(READY_ATTEMPT_SECONDS, left)))
            if result.exit_code == 0:
                return
            if result.exit_code == READY_GAVE_UP:  # the server is gone: waiting is pointless
                raise SandboxError(
                    f"the server in sandbox {self.name} ({self.spec.image}) did not start: "
                    f"{result.last_line() or 'no output'}; log: {self.log_tail() or 'empty'}"
                )
            if time.monotonic() >= deadline:
                raise SandboxError(
                    f"sandbox {self.name} was not ready within {seconds_text(int(timeout))}: "
                    f"{argv[0]} exited {result.exit_code}: {result.last_line() or 'no output'}; "
                    f"container log: {self.log_tail() or 'empty'}"
                )
            if execute.cancel_requested():
                raise Interrupted()
            time.sleep(READY_POLL_SECONDS)

    def start(self, argv: list[str], timeout: float) -> None:
        """Run argv once to start what the kind needs (a server, in the background); its
        failure is a SandboxError with its last line and the server's last log lines."""
        result = self.exec(argv, timeout)
        if result.exit_code != 0:
            raise SandboxError(
                f"could not start the server in sandbox {self.name} ({self.spec.image}): "
                f"{result.reason(argv[0])}; log: {self.log_tail() or 'empty'}"
            )

    def stop(self) -> None:
        """Kill every process of the sandbox now (it stays, to be removed as usual)."""
        with engine_calls(), suppress(NotFound, APIError):
            self.container.kill()

    def log_tail(self, lines: int = 5) -> str:
        """The server's log file (spec.log_file) or the container's log, as one bounded line:
        its last error lines when there are some (a server's cause is often followed by notes
        of its shutdown), else its last lines."""
        if self.spec.log_file:
            result = self.exec(["tail", "-n", str(LOG_LINES_READ), self.spec.log_file], 10.0)
            text = result.stdout if result.exit_code == 0 else ""
        else:
            with engine_calls():
                text = self.container.logs(tail=LOG_LINES_READ).decode("utf-8", errors="replace")
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in kept if _LOG_ERROR.search(line)]
        return printable(" | ".join((errors or kept)[-lines:]))[:300]

    def count_files(self, root: str, timeout: float) -> int:
        """Regular files below root, as seen inside the sandbox (CountFailed if they cannot be).

        find runs as root without capabilities, so a directory of another owner that is not
        readable to others (a 0700 home folder) is not entered: find reports it with its owner,
        and it is counted by find running as that owner, which the engine starts in it
        (the engine enters the working directory before it takes the user's uid). Nested
        barriers take further rounds; their number is bounded.
        """
        deadline = time.monotonic() + timeout
        pending = [_OwnedDirectory(os.fsencode(root), 0, 0)]
        files = 0
        for _ in range(COUNT_RUNS_MAXIMUM):
            if not pending:
                return files
            found, barriers = self._count_run(pending.pop(), root, deadline)
            files += found
            pending.extend(barriers)
        raise CountFailed(
            f"more than {COUNT_RUNS_MAXIMUM} directories can only be read as their owners"
        )

    def _count_run(
        self, directory: _OwnedDirectory, root: str, deadline: float
    ) -> tuple[int, list[_OwnedDirectory]]:
        """One find run: the files it counted and the directories it leaves to their owners."""
        records = CountRecords()
        at_root = directory.path == os.fsencode(root)
        result = self.exec(
            count_command(root if at_root else "."),
            max(1.0, deadline - time.monotonic()),
            user=f"{directory.uid}:{directory.gid}",
            workdir=None if at_root else os.fsdecode(directory.path),
            on_stdout=records.feed,
        )
        barriers = _next_barriers(directory, records, root)  # the most precise error first
        if result.exit_code != 0:
            where = "" if at_root else f"in {_shown(directory.path, root)} as uid {directory.uid}: "
            problem = result.last_line() or f"find exited {result.exit_code}"
            ending = f" ({result.ending()})" if result.ending() else ""
            raise CountFailed(f"{where}{problem}{ending}")
        if records.problem:
            raise CountFailed(records.problem)
        if records.incomplete():
            raise CountFailed(f"the output of find was incomplete: {records.incomplete()}")
        return records.files, barriers

    def _run(
        self,
        command: list[str],
        deadline: tuple[float, str],
        options: dict[str, Any],
        on_stdout: Callable[[bytes], None] | None,
    ) -> tuple[int, Output, Output]:
        """Start command, read its output in a worker thread, and wait for it cancellably.

        deadline is (seconds, the message of the SandboxError raised when they are past).
        """
        api = self.container.client.api
        with _exec_errors(self.name):
            exec_id = api.exec_create(self.container.id, command, **options)["Id"]
            response = _exec_start(api, exec_id)
        pump = _OutputPump(response, on_stdout)
        try:
            _wait(pump, *deadline)
        finally:
            pump.stop()
        if isinstance(pump.failure, OutputCut):
            raise SandboxError(
                f"sandbox {self.name}: the output of {_program(command)} cannot be read "
                f"whole: {pump.failure}"
            ) from pump.failure
        if isinstance(pump.failure, (*ENGINE_FAILURES, OSError)):
            raise connection_lost(_cause(pump.failure)) from pump.failure
        if pump.failure is not None:
            raise pump.failure
        with _exec_errors(self.name):
            exit_code = _exit_code(api, exec_id)
        return exit_code, pump.stdout.output(), pump.stderr.output()

    def _read_oom_kills(self) -> int | None:
        """The engine's count of OOM kills in this container (cgroup v2 or v1), None if unknown.

        Docker 20.10 does not set State.OOMKilled for a process started by exec.
        """
        reader = ["cat", *OOM_COUNTER_FILES]  # one of them exists: cat exits 1 for the other
        overdue = f"sandbox {self.name}: reading its memory counters took over 10s"
        _, stdout, _ = self._run(reader, (10.0, overdue), {"user": "0:0"}, None)
        for line in stdout.text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill" and value.strip().isdigit():
                return int(value)
        return None

    def _oom_killed_since(self) -> bool | None:
        before, self._oom_kills = self._oom_kills, self._read_oom_kills()
        if before is None or self._oom_kills is None:
            return None
        return self._oom_kills > before


class CountFailed(SandboxError):
    """The sandbox could not count the restored files; the message says where and why."""


COUNT_RUNS_MAXIMUM = 500  # find runs of one count: as root, then as each barrier's owner


@dataclass(frozen=True)
class _OwnedDirectory:
    """A directory to count as uid:gid (root first, then each barrier as its owner)."""

    path: bytes  # absolute, inside the sandbox
    uid: int
    gid: int


def _next_barriers(
    directory: _OwnedDirectory, records: CountRecords, root: str
) -> list[_OwnedDirectory]:
    """The directories to count as their owners; one its own owner cannot read fails."""
    found = []
    for barrier in records.barriers:
        path = os.path.join(directory.path, barrier.path) if barrier.path else directory.path
        if barrier.uid == directory.uid or not barrier.owner_may_enter:
            shown = _shown(path, root)
            raise CountFailed(f"{shown} cannot be read even by its owner (uid {barrier.uid})")
        found.append(_OwnedDirectory(os.path.normpath(path), barrier.uid, barrier.gid))
    return found


def _shown(path: bytes, root: str) -> str:
    """A sandbox path as a person reads it: relative to the restore root, printable."""
    relative = os.path.relpath(path, os.fsencode(root))
    return printable(relative)


def _exec_start(api: Any, exec_id: str) -> requests.Response:
    """Start an exec attached to its output, as APIClient.exec_start does, but hand back the
    response: its output must be read through the buffered file http.client read the headers
    with. docker-py reads the socket beneath it and loses what that buffer already holds
    (docker/docker-py#3332): all the output of a quick command when this thread was slow to
    read the headers (a count of files read as 0, most often with other threads busy)."""
    response = api._post_json(
        api._url("/exec/{0}/start", exec_id),
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        data={"Tty": False, "Detach": False},
        stream=True,
    )
    try:
        connection = api._get_raw_response_socket(response)  # APIError for an error status
    except BaseException:
        response.close()
        raise
    # The socket keeps the client's request timeout: a read would fail when a command stays
    # silent longer than it (the deadline of a command is _wait's).
    api._disable_socket_timeout(connection)
    return response


def _program(command: list[str]) -> str:
    """The program a command runs, past the `timeout` that exec() puts in front of it."""
    return printable(command[4] if command[:3] == ["timeout", "-s", "KILL"] else command[0])


class _OutputPump:
    """Reads an exec's output frames in a daemon thread into bounded buffers (stdout, stderr)."""

    def __init__(
        self, response: requests.Response, on_stdout: Callable[[bytes], None] | None
    ) -> None:
        self.response, self.on_stdout = response, on_stdout
        self.stdout, self.stderr = BoundedOutput(), BoundedOutput()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._pump, daemon=True, name="sandbox-output")
        self.thread.start()

    def _pump(self) -> None:
        try:
            buffered = self.response.raw._fp.fp  # the file http.client read the headers with
            for stream, data in read_frames(buffered.read1):
                if stream == STDOUT_STREAM:
                    self.stdout.feed(data)
                    if self.on_stdout is not None:
                        self.on_stdout(data)
                else:
                    self.stderr.feed(data)
        except Exception as error:  # handed to the waiting thread
            self.failure = error

    def stop(self) -> None:
        """Close the connection: a thread still reading then ends, and the socket is released."""
        with suppress(Exception):
            CancellableStream(iter(()), self.response).close()


def _wait(pump: _OutputPump, seconds: float, overdue: str) -> None:
    """Wait for the output to end, polling for cancellation; past the deadline, give up."""
    deadline = time.monotonic() + seconds
    try:
        while pump.thread.is_alive():
            pump.thread.join(POLL_SECONDS)
            if execute.cancel_requested():
                raise Interrupted()
            if time.monotonic() > deadline and pump.thread.is_alive():
                raise SandboxError(overdue)
    except KeyboardInterrupt:
        execute.request_cancel()
        raise Interrupted() from None


def _exit_code(api: Any, exec_id: str) -> int:
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    while True:
        state = api.exec_inspect(exec_id)
        if not state.get("Running") and state.get("ExitCode") is not None:
            return int(state["ExitCode"])
        if time.monotonic() > deadline:
            raise connection_lost("the output of a sandbox command ended while it still ran")
        time.sleep(POLL_SECONDS / 2)


@contextmanager
def _exec_errors(name: str) -> Iterator[None]:
    with engine_calls():
        try:
            yield
        except DockerException as error:
            raise SandboxError(f"sandbox {name}: exec failed: {_short(error)}") from error


def _refuse_missing_timeout(image: str, exit_code: int, stdout: Output, stderr: Output) -> None:
    text = stdout.text() + stderr.text()
    if exit_code in (126, 127) and ('"timeout"' in text or "timeout: not found" in text):
        raise PreflightError(
            f"image {image} lacks a program needed to run checks "
            f"(coreutils timeout): {text.strip()[:120]}"
        )


class DockerSandboxes:
    """The engine's sandboxes, as a scenario run uses them (in-process tests pass a fake)."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def check_image(self, image: str) -> None:
        check_image(self.client, image)

    def open(
        self, spec: SandboxSpec, keep: bool, hand_off: Callable[[str], bool] | None
    ) -> AbstractContextManager[Sandbox]:
        return sandbox(self.client, spec, keep, hand_off)


def check_image(client: docker.DockerClient, image: str) -> None:
    try:
        with engine_calls():
            client.images.get(image)
    except ImageNotFound as error:
        raise PreflightError(
            f"sandbox image {image} is not present locally (build it with scripts/setup.sh "
            "or docker build; images are never pulled)"
        ) from error
    except DockerException as error:
        raise EnvironmentUnusable(f"Docker engine unreachable: {_short(error)}") from error


@contextmanager
def sandbox(
    client: docker.DockerClient,
    spec: SandboxSpec,
    keep: bool = False,
    hand_off: Callable[[str], bool] | None = None,
) -> Iterator[Sandbox]:
    """Create and start a hardened container; remove it on exit (unless keep), whatever happens.

    hand_off(container id) may take the removal over (a detached reaper) and return True;
    otherwise, or when it fails, the container is removed here.
    """
    container = None
    try:
        with engine_calls():
            container = client.containers.create(**_create_arguments(spec))
            container.start()
        yield Sandbox(container, spec)
    except ImageNotFound as error:
        raise PreflightError(f"sandbox image {spec.image} is not present locally") from error
    except APIError as error:
        if spec.user and "unable to find user" in str(error.explanation):
            raise SandboxError(
                f"sandbox image {spec.image} has no user {spec.user}: it is not an image of "
                "this kind's engine"
            ) from error
        raise SandboxError(f"sandbox for {spec.scenario}: {_short(error)}") from error
    finally:
        if container is not None and not keep and not (hand_off and hand_off(container.id)):
            remove(container)


def remove_by_id(client: docker.DockerClient, container_id: str) -> None:
    with engine_calls(), suppress(NotFound):
        remove(client.containers.get(container_id))


def _create_arguments(spec: SandboxSpec) -> dict[str, Any]:
    scratch = f"rw,nosuid,nodev,size={spec.scratch_bytes}"
    tmpfs = {SCRATCH_MOUNT: scratch, "/tmp": scratch, "/run": "rw,nosuid,nodev,size=16m"}
    volumes = {
        host: {"bind": inside, "mode": "ro"} for host, inside in spec.read_only_mounts.items()
    }
    if spec.scratch_folder is not None:
        del tmpfs[SCRATCH_MOUNT]
        tmpfs["/tmp"] = "rw,nosuid,nodev,size=256m"
        volumes[spec.scratch_folder] = {"bind": SCRATCH_MOUNT, "mode": "rw"}
    return {
        "image": spec.image,
        "command": ["sleep", "infinity"],
        "name": spec.container_name(),
        "labels": spec.labels(),
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": tmpfs,
        "volumes": volumes,
        "mem_limit": spec.memory_bytes,
        "memswap_limit": spec.memory_bytes,
        "pids_limit": spec.pids,
        "nano_cpus": int(spec.cpus * 1e9),
        "working_dir": SCRATCH_MOUNT,
        "environment": spec.environment,
        "detach": True,
        **({"user": spec.user} if spec.user else {}),
    }


def remove(container: Any) -> None:
    """Remove a container and its anonymous volumes; a failure is logged, never raised."""
    try:
        container.remove(force=True, v=True)
    except NotFound:
        pass
    except (DockerException, *ENGINE_FAILURES) as error:
        log.warning("could not remove sandbox %s: %s", getattr(container, "name", "?"), error)


@dataclass(frozen=True)
class Leftover:
    kind: str  # container or volume
    name: str
    run_id: str
    expires_at: str


def prune(
    client: docker.DockerClient,
    everything: bool = False,
    dry_run: bool = False,
    run_id: str | None = None,
) -> list[Leftover]:
    """Remove managed containers and volumes past their expiry (all of them with everything)."""
    selector = [f"{LABEL_MANAGED}=true"] + ([f"{LABEL_RUN}={run_id}"] if run_id else [])
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    found: list[Leftover] = []
    with engine_calls():
        for container in client.containers.list(all=True, filters={"label": selector}):
            labels = container.labels
            if everything or run_id or labels.get(LABEL_EXPIRES, "") <= now:
                found.append(
                    Leftover(
                        "container",
                        container.name,
                        labels.get(LABEL_RUN, ""),
                        labels.get(LABEL_EXPIRES, ""),
                    )
                )
                if not dry_run:
                    remove(container)
        for volume in client.volumes.list(filters={"label": selector}):
            labels = volume.attrs.get("Labels") or {}
            if everything or run_id or labels.get(LABEL_EXPIRES, "") <= now:
                found.append(
                    Leftover(
                        "volume",
                        volume.name,
                        labels.get(LABEL_RUN, ""),
                        labels.get(LABEL_EXPIRES, ""),
                    )
                )
                if not dry_run:
                    try:
                        volume.remove(force=True)
                    except DockerException as error:
                        log.warning("could not remove volume %s: %s", volume.name, error)
    return found


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:300]


def _cause(error: BaseException) -> str:
    """The innermost reason of a connection failure ('Connection refused'), else its text."""
    current = error
    for _ in range(8):
        inner = getattr(current, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in current.args if isinstance(a, BaseException)), None)
        if not isinstance(inner, BaseException):
            inner = current.__cause__ or current.__context__
        if inner is None or inner is current:
            break
        current = inner
    if isinstance(current, OSError) and current.strerror:
        return current.strerror
    return _short(current)
