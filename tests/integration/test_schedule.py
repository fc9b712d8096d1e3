"""`restore-tests schedule`: units checked by systemd's own parser, installs into tmp folders,
and the real command line."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from restore_tests.errors import EnvironmentUnusable
from restore_tests.schedule import (
    PERIODS,
    SYSTEMD_RUNTIME,
    Schedule,
    ScheduleRequest,
    install,
    plan_schedule,
)
from tests.conftest import ROOT, run_cli
from tests.unit.test_schedule_rendering import scenario_folder, unit

pytestmark = pytest.mark.integration

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def plan(root: Path, every: str = "quarter", program: Path | None = None) -> Schedule:
    program = program or executable(root / "bin" / "restore-tests")
    request = ScheduleRequest(
        every, scenario_folder(root), root, f"sqlite:///{root}/results.db", (str(program),)
    )
    return plan_schedule(request)


@pytest.fixture
def fake_systemctl(tmp_path, monkeypatch) -> Path:
    """systemd is not the init here: a systemctl on PATH that records its arguments. The exit
    code it gives is read from a file next to the log."""
    folder = tmp_path / "fake-bin"
    log = folder / "systemctl.log"
    script = executable(folder / "systemctl")
    script.write_text(
        f'#!/bin/sh\necho "$*" >> {log}\necho "systemctl said no" >&2\n'
        f"exit $(cat {folder / 'exit-code'} 2>/dev/null || echo 0)\n"
    )
    monkeypatch.setenv("PATH", f"{folder}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return log


@pytest.mark.parametrize("every", sorted(PERIODS))
def test_systemd_reads_the_units_and_their_calendar_as_written(tmp_path, every):
    # A program path with a space and a percent sign: wrong quoting makes systemd look for
    # another file ("is not executable"), wrong escaping another name (%% is a specifier).
    odd = tmp_path / "my tools 100%"
    schedule = plan(tmp_path, every, executable(odd / "restore-tests"))
    units = tmp_path / "units"
    units.mkdir()
    (units / "restore-tests-drill.service").write_text(schedule.service)
    (units / "restore-tests-drill.timer").write_text(schedule.timer)
    on_calendar = unit(schedule.timer)["Timer"]["OnCalendar"]
    assert unit(schedule.service)["Service"]["ExecStart"].startswith('"')
    if SYSTEMD_ANALYZE is None:
        return  # only the systemd checks below need it
    verified = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *sorted(map(str, units.iterdir()))],
        capture_output=True,
        text=True,
        cwd=units,
    )
    assert verified.returncode == 0, verified.stderr
    assert "restore-tests-drill" not in verified.stderr, verified.stderr  # no warning either
    calendar = subprocess.run(
        [SYSTEMD_ANALYZE, "calendar", on_calendar], capture_output=True, text=True, check=True
    )
    assert f"Normalized form: {on_calendar}" in calendar.stdout


def test_installing_the_cron_job_twice_writes_it_once_then_says_unchanged(tmp_path):
    schedule = plan(tmp_path)
    cron = tmp_path / "cron.d"
    cron.mkdir()
    first = install(schedule, systemd=False, cron_dir=cron)
    assert first == [
        f"systemd is not the running init ({SYSTEMD_RUNTIME} is missing): cron job instead",
        f"wrote {cron}/restore-tests-drill",
    ]
    written = cron / "restore-tests-drill"
    assert written.read_text() == schedule.cron
    assert stat.S_IMODE(written.stat().st_mode) == 0o644  # cron ignores a writable file
    assert install(schedule, systemd=False, cron_dir=cron)[1] == f"unchanged {written}"
    assert sorted(path.name for path in cron.iterdir()) == ["restore-tests-drill"]


def test_installing_the_units_reloads_systemd_only_when_they_changed(tmp_path, fake_systemctl):
    schedule = plan(tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    assert install(schedule, systemd=True, unit_dir=units) == [
        f"wrote {units}/restore-tests-drill.service",
        f"wrote {units}/restore-tests-drill.timer",
        "ran systemctl daemon-reload",
        "ran systemctl enable --now restore-tests-drill.timer",
    ]
    assert install(schedule, systemd=True, unit_dir=units) == [
        f"unchanged {units}/restore-tests-drill.service",
        f"unchanged {units}/restore-tests-drill.timer",
        "ran systemctl enable --now restore-tests-drill.timer",
    ]
    assert fake_systemctl.read_text().splitlines() == [
        "daemon-reload",
        "enable --now restore-tests-drill.timer",
        "enable --now restore-tests-drill.timer",
    ]
    assert (units / "restore-tests-drill.timer").read_text() == schedule.timer


def test_a_systemctl_that_fails_makes_the_environment_unusable_with_its_message(
    tmp_path, fake_systemctl
):
    (fake_systemctl.parent / "exit-code").write_text("1\n")
    units = tmp_path / "units"
    units.mkdir()
    with pytest.raises(EnvironmentUnusable) as raised:
        install(plan(tmp_path), systemd=True, unit_dir=units)
    assert str(raised.value).startswith("systemctl daemon-reload failed: systemctl said no")


def test_a_missing_environment_file_stops_the_install_before_anything_is_written(tmp_path):
    request = ScheduleRequest(
        "week",
        scenario_folder(tmp_path),
        tmp_path,
        "results.db",
        (str(executable(tmp_path / "restore-tests")),),
        environment_file=tmp_path / "missing.env",
    )
    cron = tmp_path / "cron.d"
    cron.mkdir()
    with pytest.raises(Exception, match=f"--environment-file {tmp_path}/missing.env: no such"):
        install(plan_schedule(request), systemd=False, cron_dir=cron)
    assert list(cron.iterdir()) == []


def test_schedule_every_quarter_prints_both_units_and_the_cron_line_for_pasting(tmp_path):
    folder = scenario_folder(tmp_path)
    result = run_cli(
        "schedule", "--every", "quarter", "--db", "history.db", "--at", "04:15", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"note: 1 scenario in {folder}\n"
    sections = result.stdout.split("# ---- ")
    assert sections[1].startswith("/etc/systemd/system/restore-tests-drill.service ----\n")
    service = unit(sections[1].split("\n", 1)[1])["Service"]
    assert service["ExecStart"] == (
        f"{sys.executable} {ROOT}/cli.py drill --quiet {folder} --db ${{RESTORE_TESTS_DB}}"
    )
    assert service["Environment"].splitlines() == [
        f'"RESTORE_TESTS_DB=sqlite:///{tmp_path}/history.db"',
        f'"RESTORE_TESTS_WORK_DIR={os.environ["RESTORE_TESTS_WORK_DIR"]}"',  # the tests' staging
    ]
    assert service["WorkingDirectory"] == str(tmp_path)
    assert sections[2].startswith("/etc/systemd/system/restore-tests-drill.timer ----\n")
    assert "\nOnCalendar=*-01,04,07,10-01 04:15:00\n" in sections[2]
    assert sections[3].startswith("/etc/cron.d/restore-tests-drill (where systemd is not")
    assert f"\n15 4 1 1,4,7,10 * root cd {tmp_path} && export " in sections[3]
    assert result.stdout.endswith("(or run the same command again with --install, as root)\n")


@pytest.mark.skipif(SYSTEMD_RUNTIME.is_dir(), reason="would enable a timer on this machine")
def test_schedule_install_twice_writes_the_cron_file_then_leaves_it_unchanged(tmp_path):
    scenario_folder(tmp_path)
    options = ["--unit-dir", "units", "--cron-dir", "cron", "--db", "history.db"]
    (tmp_path / "cron").mkdir()
    first = run_cli("schedule", "--every", "week", "--install", *options, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[1] == f"wrote {tmp_path}/cron/restore-tests-drill"
    second = run_cli("schedule", "--every", "week", "--install", *options, cwd=tmp_path)
    assert second.stdout.splitlines()[1] == f"unchanged {tmp_path}/cron/restore-tests-drill"
    assert " * * 1 root " in (tmp_path / "cron" / "restore-tests-drill").read_text()


def test_schedule_install_into_a_folder_it_cannot_write_exits_3_in_one_line(tmp_path):
    scenario_folder(tmp_path)
    (tmp_path / "plain-file").write_text("")
    blocked = tmp_path / "plain-file" / "dir"  # as root, only a non-folder refuses a write
    result = run_cli(
        "schedule",
        "--every",
        "month",
        "--install",
        "--unit-dir",
        str(blocked),
        "--cron-dir",
        str(blocked),
        cwd=tmp_path,
    )
    assert result.returncode == 3, result.stderr
    [line] = [line for line in result.stderr.splitlines() if not line.startswith("note: ")]
    assert line.startswith(f"restore-tests: cannot write {blocked}/restore-tests-drill")
    assert "Not a directory (run as root, or choose the folder with --" in line


def test_schedule_refuses_a_history_url_with_a_password_as_a_usage_error(tmp_path):
    scenario_folder(tmp_path)
    url = "postgresql+psycopg://drill:hunter22@db.example/history"
    result = run_cli("schedule", "--every", "quarter", "--db", url, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == "" and "hunter22" not in result.stderr
    assert result.stderr.startswith("restore-tests: the history URL holds a password")
    assert result.stderr.count("\n") == 1
