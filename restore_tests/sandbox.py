"""The one gateway to Docker: isolated, labelled, limited sandboxes that are always removed.

A sandbox has no network, no capabilities, no new privileges, a read-only root, tmpfs scratch
space and memory/pids/CPU limits. Restored data is mounted read-only. Every container carries
labels (managed, run, scenario, expires-at): cleanup and `prune` work from labels only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from restore_tests.errors import EnvironmentUnusable, PreflightError, SandboxError

log = logging.getLogger(__name__)

LABEL_MANAGED = "restore-tests.managed"
LABEL_RUN = "restore-tests.run"
LABEL_SCENARIO = "restore-tests.scenario"
LABEL_EXPIRES = "restore-tests.expires-at"
RESTORE_MOUNT = "/restore"
SCRATCH_MOUNT = "/scratch"
DEFAULT_TTL = timedelta(hours=6)
EXEC_NOT_FOUND = (126, 127)


def connect() -> docker.DockerClient:
    """A client for the local engine; EnvironmentUnusable when there is none."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as error:
        raise EnvironmentUnusable(f"Docker engine unreachable: {_short(error)}") from error
    return client


def engine_version(client: docker.DockerClient) -> str:
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
    ttl: timedelta = DEFAULT_TTL

    def labels(self) -> dict[str, str]:
        expires = datetime.now(UTC) + self.ttl
        return {
            LABEL_MANAGED: "true",
            LABEL_RUN: self.run_id,
            LABEL_SCENARIO: self.scenario,
            LABEL_EXPIRES: expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float


class Sandbox:
    """A running, isolated container; exec() runs a program in it."""

    def __init__(self, container: Any, spec: SandboxSpec) -> None:
        self.container = container
        self.spec = spec

    @property
    def name(self) -> str:
        return str(self.container.name)

    def exec(self, argv: list[str], timeout: float) -> ExecResult:
        """Run argv inside the sandbox, killed after timeout seconds (by coreutils timeout)."""
        started = time.monotonic()
        command = ["timeout", "-s", "KILL", f"{max(1, int(timeout))}", *argv]
        try:
            exit_code, (stdout, stderr) = self.container.exec_run(command, demux=True)
        except DockerException as error:
            raise SandboxError(f"sandbox {self.name}: exec failed: {_short(error)}") from error
        result = ExecResult(
            exit_code,
            (stdout or b"").decode(errors="replace"),
            (stderr or b"").decode(errors="replace"),
            time.monotonic() - started,
        )
        if exit_code in EXEC_NOT_FOUND and "timeout" in result.stdout + result.stderr:
            raise PreflightError(
                f"image {self.spec.image} lacks a program needed to run checks "
                f"(coreutils timeout): {result.stderr.strip()[:120]}"
            )
        return result


def check_image(client: docker.DockerClient, image: str) -> None:
    try:
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
        container = client.containers.create(**_create_arguments(spec))
        container.start()
        yield Sandbox(container, spec)
    except ImageNotFound as error:
        raise PreflightError(f"sandbox image {spec.image} is not present locally") from error
    except APIError as error:
        raise SandboxError(f"sandbox for {spec.scenario}: {_short(error)}") from error
    finally:
        if container is not None and not keep and not (hand_off and hand_off(container.id)):
            remove(container)


def remove_by_id(client: docker.DockerClient, container_id: str) -> None:
    with suppress(NotFound):
        remove(client.containers.get(container_id))


def _create_arguments(spec: SandboxSpec) -> dict[str, Any]:
    scratch = f"rw,nosuid,nodev,size={spec.scratch_bytes}"
    return {
        "image": spec.image,
        "command": ["sleep", "infinity"],
        "name": f"restore-tests-{spec.scenario}-{spec.run_id}"[:120],
        "labels": spec.labels(),
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {SCRATCH_MOUNT: scratch, "/tmp": scratch, "/run": "rw,nosuid,nodev,size=16m"},
        "volumes": {
            host: {"bind": inside, "mode": "ro"} for host, inside in spec.read_only_mounts.items()
        },
        "mem_limit": spec.memory_bytes,
        "memswap_limit": spec.memory_bytes,
        "pids_limit": spec.pids,
        "nano_cpus": int(spec.cpus * 1e9),
        "working_dir": SCRATCH_MOUNT,
        "detach": True,
    }


def remove(container: Any) -> None:
    try:
        container.remove(force=True, v=True)
    except NotFound:
        pass
    except DockerException as error:
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
                    "volume", volume.name, labels.get(LABEL_RUN, ""), labels.get(LABEL_EXPIRES, "")
                )
            )
            if not dry_run:
                try:
                    volume.remove(force=True)
                except DockerException as error:
                    log.warning("could not remove volume %s: %s", volume.name, error)
    return found


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:300]
