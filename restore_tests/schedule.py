"""The unattended drill's schedule: a systemd timer and service, or the equivalent cron job.

The units run `restore-tests drill --quiet SCENARIOS --db URL` from absolute paths. Secrets are
never written into them: the service names an EnvironmentFile, the cron job sources it. Values
are escaped for their reader (systemd specifiers and quoting; cron's `%`; the shell), so a path
with a space or a percent sign means what it says.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from restore_tests import execute
from restore_tests.errors import CommandFailed, EnvironmentUnusable, UsageError
from restore_tests.history.store import URL_VARIABLE
from restore_tests.scenario import load_paths
from restore_tests.timing import format_duration

DEFAULT_NAME = "restore-tests-drill"
DEFAULT_AT = "03:30"  # after the daylight-saving jumps (02:00-03:00), which cron runs twice or not
UNIT_DIR = Path("/etc/systemd/system")
CRON_DIR = Path("/etc/cron.d")
SYSTEMD_RUNTIME = Path("/run/systemd/system")  # exists only when systemd is the running init
RANDOMIZED_DELAY = "1h"
START_TIMEOUT = "12h"  # the whole drill; past it the drill is stopped, and says so
STOP_TIMEOUT = "5min"  # for the stopped drill to interrupt its restores and remove sandboxes
WORK_DIR_VARIABLE = "RESTORE_TESTS_WORK_DIR"  # the drill's --work-dir
CRON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's default
SYSTEMCTL_TIMEOUT_SECONDS = 120.0
# Debian's cron ignores files in cron.d whose names hold a dot: the name is both.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Period:
    """How often the drill runs, as systemd's calendar and as cron's day fields."""

    adjective: str
    calendar: str  # OnCalendar= without the time of day
    cron_days: str  # day-of-month, month and day-of-week fields
    seconds: float


PERIODS = {
    "quarter": Period("quarterly", "*-01,04,07,10-01", "1 1,4,7,10 *", 92 * 86400.0),
    "month": Period("monthly", "*-*-01", "1 * *", 31 * 86400.0),
    "week": Period("weekly", "Mon *-*-*", "* * 1", 7 * 86400.0),
}


@dataclass(frozen=True)
class ScheduleRequest:
    """What the administrator asked for; relative paths are taken from the current directory."""

    every: str
    scenarios_dir: Path
    directory: Path  # the drill's working directory
    db_url: str
    program: tuple[str, ...]  # how to run restore-tests itself (see program_command)
    name: str = DEFAULT_NAME
    at: str = DEFAULT_AT
    environment_file: Path | None = None
    random_count: int | None = None
    work_dir: Path | None = None  # where the drill stages restores (its --work-dir)


@dataclass(frozen=True)
class Schedule:
    """The rendered service, timer and cron file, and notes for the administrator."""

    name: str
    service: str
    timer: str
    cron: str
    notes: tuple[str, ...] = ()
    environment_file: Path | None = None


def program_command(argv0: str | None = None) -> tuple[str, ...]:
    """The absolute command that runs this restore-tests: its console script, else the Python
    file it was started as (with this interpreter), else restore-tests found on PATH."""
    started_as = Path(argv0 if argv0 is not None else sys.argv[0])
    if started_as.name == "restore-tests" and os.access(started_as, os.X_OK):
        return (os.path.abspath(started_as),)
    if started_as.suffix == ".py" and started_as.is_file():
        return (sys.executable, os.path.abspath(started_as))
    found = shutil.which("restore-tests")
    if found is None:
        raise EnvironmentUnusable("cannot tell where the restore-tests program is (not on PATH)")
    return (os.path.abspath(found),)


def plan_schedule(request: ScheduleRequest) -> Schedule:
    """Check the request (scenarios loaded, paths absolute, no secret in the units) and render.

    Raises UsageError (or ScenarioError) for anything that would make the timer fail later.
    """
    if not _NAME.match(request.name):
        raise UsageError(f"--name {request.name!r}: use 1 to 64 letters, digits, '-' or '_'")
    if request.every not in PERIODS:
        raise UsageError(f"--every {request.every!r}: choose one of {', '.join(PERIODS)}")
    hour, minute = _time_of_day(request.at)
    scenarios_dir = _folder(request.scenarios_dir, "--scenarios-dir")
    environment = [(URL_VARIABLE, history_url(request.db_url))]
    if request.work_dir:
        environment.append((WORK_DIR_VARIABLE, str(_absolute(request.work_dir))))
    job = Job(
        request.name,
        PERIODS[request.every],
        hour,
        minute,
        _command(request, scenarios_dir),
        _folder(request.directory, "the working directory"),
        tuple(environment),
        _absolute(request.environment_file) if request.environment_file else None,
        scenarios_dir,
    )
    notes = _scenario_notes(scenarios_dir, job.period, request.random_count)
    notes += _environment_notes(job.environment_file)
    return Schedule(
        job.name,
        render_service(job),
        render_timer(job),
        render_cron(job),
        notes,
        job.environment_file,
    )


@dataclass(frozen=True)
class Job:
    """A checked request: absolute paths, the period, the command (without --db)."""

    name: str
    period: Period
    hour: int
    minute: int
    command: tuple[str, ...]  # --db is added from RESTORE_TESTS_DB, which the secrets may set
    directory: Path
    environment: tuple[tuple[str, str], ...]  # the history's URL, the staging folder
    environment_file: Path | None
    scenarios_dir: Path

    @property
    def on_calendar(self) -> str:
        return f"{self.period.calendar} {self.hour:02}:{self.minute:02}:00"

    @property
    def description(self) -> str:
        return f"restore-tests: {self.period.adjective} restore drill of {self.scenarios_dir}"


def history_url(given: str) -> str:
    """The history URL with a relative SQLite file made absolute (a plain path is a SQLite
    file). Refuses a URL holding a password: it would be written into the unit."""
    _printable(given)
    if "://" not in given:
        return f"sqlite:///{_absolute(Path(given))}"
    try:
        url: URL = make_url(given)
    except ArgumentError as error:
        raise UsageError(f"--db {given!r} is not a database URL ({error})") from None
    if url.password:
        raise UsageError(
            "the history URL holds a password, which would be written into the unit and the "
            "cron job: give it without the password, and put the password in the "
            "--environment-file (PGPASSWORD=... for PostgreSQL)"
        )
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        url = url.set(database=str(_absolute(Path(url.database or ""))))
    return url.render_as_string(hide_password=False)


def render_service(job: Job) -> str:
    """The oneshot service that runs the drill once, at low priority, bounded in time."""
    lines = [
        "[Unit]",
        f"Description={_specifiers(job.description)}",
        "Wants=network-online.target",
        "After=network-online.target docker.service",
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={_specifiers(str(job.directory))}",
        *(f"Environment={_systemd_quoted(f'{name}={value}')}" for name, value in job.environment),
    ]
    if job.environment_file:
        lines.append(f"EnvironmentFile={_specifiers(str(job.environment_file))}")
    command = " ".join(_exec_word(word) for word in job.command)
    lines += [
        f"ExecStart={command} --db ${{{URL_VARIABLE}}}",
        f"TimeoutStartSec={START_TIMEOUT}",
        "# Only the drill is signalled when it is stopped: it interrupts its own restores (SIGINT:",
        "# restic leaves no stale lock) and the reaper it starts still removes the last sandbox.",
        "KillMode=process",
        f"TimeoutStopSec={STOP_TIMEOUT}",
        "Nice=10",
        "IOSchedulingClass=best-effort",
        "IOSchedulingPriority=7",
    ]
    return "\n".join(lines) + "\n"


def render_timer(job: Job) -> str:
    """The timer: a run missed while the machine was off is made up (Persistent)."""
    return (
        f"[Unit]\nDescription={_specifiers(job.description)} (timer)\n\n"
        f"[Timer]\nOnCalendar={job.on_calendar}\nPersistent=true\n"
        f"RandomizedDelaySec={RANDOMIZED_DELAY}\nUnit={job.name}.service\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )


def render_cron(job: Job) -> str:
    """The /etc/cron.d file: the same command, environment, priority and time bound."""
    steps = [f"cd {shlex.quote(str(job.directory))}"]
    steps += [f"export {name}={shlex.quote(value)}" for name, value in job.environment]
    if job.environment_file:
        steps.append(f"set -a && . {shlex.quote(str(job.environment_file))} && set +a")
    bounded = ["timeout", "-k", "5m", START_TIMEOUT, "nice", "-n", "10", "ionice", "-c2", "-n7"]
    run = shlex.join([*bounded, *job.command]) + f' --db "${URL_VARIABLE}"'
    command = " && ".join([*steps, f"exec {run}"])
    schedule = f"{job.minute} {job.hour} {job.period.cron_days}"
    return (
        f"# {job.description}\n"
        "# cron has no Persistent= nor RandomizedDelaySec=: a run missed while the machine was\n"
        "# off is not made up.\n"
        f"SHELL=/bin/sh\nPATH={CRON_PATH}\n"
        f"{schedule} root {_cron_escape(command)}\n"
    )


def as_text(schedule: Schedule, unit_dir: Path | None = None, cron_dir: Path | None = None) -> str:
    """The two units and the cron file, each under a comment naming where it goes."""
    units = _absolute(unit_dir or UNIT_DIR)
    sections = [
        (units / f"{schedule.name}.service", schedule.service),
        (units / f"{schedule.name}.timer", schedule.timer),
        (
            f"{_absolute(cron_dir or CRON_DIR)}/{schedule.name} (where systemd is not the init)",
            schedule.cron,
        ),
    ]
    text = "\n".join(f"# ---- {where} ----\n{content}" for where, content in sections)
    return (
        f"{text}\n# then: systemctl daemon-reload && systemctl enable --now {schedule.name}.timer"
        "\n#   (or run the same command again with --install, as root)\n"
    )


def systemd_is_init() -> bool:
    return SYSTEMD_RUNTIME.is_dir()


def install(
    schedule: Schedule, systemd: bool, unit_dir: Path | None = None, cron_dir: Path | None = None
) -> list[str]:
    """Install the timer and service, reload systemd and start the timer; without systemd as
    the init, install the cron file. Idempotent. Returns what was done, one line each."""
    if schedule.environment_file and not schedule.environment_file.is_file():
        raise UsageError(f"--environment-file {schedule.environment_file}: no such file")
    if not systemd:
        path = _absolute(cron_dir or CRON_DIR) / schedule.name
        changed = write_if_changed(path, schedule.cron, "--cron-dir")
        return [
            f"systemd is not the running init ({SYSTEMD_RUNTIME} is missing): cron job instead",
            f"{'wrote' if changed else 'unchanged'} {path}",
        ]
    done, changed = [], False
    for suffix, content in (("service", schedule.service), ("timer", schedule.timer)):
        path = _absolute(unit_dir or UNIT_DIR) / f"{schedule.name}.{suffix}"
        written = write_if_changed(path, content, "--unit-dir")
        done.append(f"{'wrote' if written else 'unchanged'} {path}")
        changed = changed or written
    if changed:
        done.append(_systemctl("daemon-reload"))
    done.append(_systemctl("enable", "--now", f"{schedule.name}.timer"))
    return done


def write_if_changed(path: Path, content: str, option: str) -> bool:
    """Write content to path atomically (mode 0644) unless it holds it already; True if written.

    Raises EnvironmentUnusable naming the path and the option that chooses another folder.
    """
    try:
        if path.is_file() and path.read_text() == content:
            return False
        temporary = path.with_name(f".{path.name}.new")
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644
        )
        with os.fdopen(descriptor, "w") as stream:
            os.fchmod(stream.fileno(), 0o644)  # whatever the umask: cron ignores writable files
            stream.write(content)
        os.replace(temporary, path)
    except OSError as error:
        raise EnvironmentUnusable(
            f"cannot write {path}: {error.strerror} (run as root, or choose the folder with "
            f"{option})"
        ) from None
    return True


def _systemctl(*arguments: str) -> str:
    try:
        execute.run(["systemctl", *arguments], timeout=SYSTEMCTL_TIMEOUT_SECONDS)
    except CommandFailed as error:
        raise EnvironmentUnusable(f"systemctl {' '.join(arguments)} failed: {error}") from None
    return f"ran systemctl {' '.join(arguments)}"


def _command(request: ScheduleRequest, scenarios_dir: Path) -> tuple[str, ...]:
    for word in request.program:
        _printable(word)
    random = ("--random", str(request.random_count)) if request.random_count else ()
    return (*request.program, "drill", "--quiet", *random, str(scenarios_dir))


def _time_of_day(text: str) -> tuple[int, int]:
    match = _AT.match(text.strip())
    if not match:
        raise UsageError(f"--at {text!r}: write a time of day as HH:MM, like 03:30")
    return int(match.group(1)), int(match.group(2))


def _folder(path: Path, option: str) -> Path:
    folder = _absolute(path)
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: no such folder")
    return folder


def _absolute(path: Path) -> Path:
    _printable(str(path))
    return Path(os.path.abspath(path))


def _printable(text: str) -> None:
    if _CONTROL.search(text):
        raise UsageError(f"{text!r}: a control character cannot be written into a unit or cron")


def _scenario_notes(
    scenarios_dir: Path, period: Period, random_count: int | None
) -> tuple[str, ...]:
    """Loads the scenarios (a mistake fails now, not at 03:30) and names those that must be
    proven more often than the drill runs."""
    scenarios = load_paths([scenarios_dir])
    count = len(scenarios)
    notes = [f"{count} {'scenario' if count == 1 else 'scenarios'} in {scenarios_dir}"]
    if random_count and random_count < count:
        notes[0] += f"; each run drills {random_count}, weighted toward the least recently proven"
    for scenario in scenarios:
        if scenario.every < period.seconds:
            notes.append(
                f"{scenario.name} must pass every {format_duration(scenario.every)}, more often "
                f"than a {period.adjective} drill: it will show as OVERDUE"
            )
    return tuple(notes)


def _environment_notes(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return (f"{path} does not exist yet: create it (KEY=value lines, chmod 600)",)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"{path} is readable by other users: chmod 600 it (it holds secrets)",)
    return ()


def _specifiers(text: str) -> str:
    """A literal value for a systemd setting that expands %-specifiers."""
    return text.replace("%", "%%")


def _systemd_quoted(text: str) -> str:
    """A double-quoted value for systemd (Environment=): C escapes and specifiers undone."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def _exec_word(word: str) -> str:
    """One word of ExecStart=: also $-expansion undone, quoted only when it has to be."""
    quoted = _systemd_quoted(word).replace("$", "$$")
    plain = quoted[1:-1]
    needs_quotes = plain != word or not word or any(char in word for char in " \t'\";")
    return quoted if needs_quotes else plain


def _cron_escape(command: str) -> str:
    """cron turns an unescaped % into a newline and takes \\% and \\\\ as % and \\."""
    return command.replace("\\", "\\\\").replace("%", "\\%")
