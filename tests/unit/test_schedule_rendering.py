"""The unattended drill's schedule: the systemd units and the cron job as rendered, read back."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from restore_tests.errors import EXIT_USAGE, ScenarioError, UsageError
from restore_tests.schedule import (
    Schedule,
    ScheduleRequest,
    as_text,
    plan_schedule,
    program_command,
)

PROGRAM = ("/opt/restore-tests/bin/restore-tests",)
SECRET = "s3cr3t-restic-password"


def scenario_folder(root: Path, every: str = "92d") -> Path:
    folder = root / "scenarios"
    folder.mkdir()
    (folder / "share.yaml").write_text(
        "name: share\nkind: files\n"
        f"every: {every}\n"
        "source:\n  type: restic\n  repository: /srv/backup/share\n  password_env: SHARE_PW\n"
        "verify:\n  manifest: /data/SHA256SUMS\n"
    )
    return folder


def plan(root: Path, **changes: object) -> Schedule:
    request = {
        "every": "quarter",
        "scenarios_dir": scenario_folder(root),
        "directory": root,
        "db_url": f"sqlite:///{root}/results.db",
        "program": PROGRAM,
        **changes,
    }
    return plan_schedule(ScheduleRequest(**request))  # type: ignore[arg-type]


def unit(text: str) -> dict[str, dict[str, str]]:
    """A unit file read as systemd reads it: sections, keys (case kept), comments skipped; a key
    given again (Environment=) adds a line to its value. Anything else is not a unit line."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            assert line[1:-1] not in sections, f"section {line} twice"
            current = sections.setdefault(line[1:-1], {})
            continue
        key, separator, value = line.partition("=")
        assert current is not None and separator and key == key.strip(), f"bad line {line!r}"
        current[key] = f"{current[key]}\n{value}" if key in current else value
    return sections


def cron_job(cron_file: str) -> tuple[list[str], str, list[str]]:
    """The job line of a cron file: its five time fields, its user, its command as sh reads it."""
    [line] = [line for line in cron_file.splitlines() if line and line[0].isdigit()]
    *fields, user, command = line.split(" ", 6)
    unescaped = command.replace("\\%", "%").replace("\\\\", "\\")  # what cron hands to sh
    return fields, user, shlex.split(unescaped)


def test_a_quarterly_timer_fires_on_the_first_day_of_each_quarter_at_night(tmp_path):
    timer = unit(plan(tmp_path).timer)
    assert timer["Timer"]["OnCalendar"] == "*-01,04,07,10-01 03:30:00"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["RandomizedDelaySec"] == "1h"
    assert timer["Timer"]["Unit"] == "restore-tests-drill.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.parametrize(
    ("every", "on_calendar", "cron_fields"),
    [
        ("quarter", "*-01,04,07,10-01 22:05:00", ["5", "22", "1", "1,4,7,10", "*"]),
        ("month", "*-*-01 22:05:00", ["5", "22", "1", "*", "*"]),
        ("week", "Mon *-*-* 22:05:00", ["5", "22", "*", "*", "1"]),
    ],
)
def test_each_period_has_its_calendar_and_the_same_time_in_cron(
    tmp_path, every, on_calendar, cron_fields
):
    schedule = plan(tmp_path, every=every, at="22:05")
    assert unit(schedule.timer)["Timer"]["OnCalendar"] == on_calendar
    fields, user, _ = cron_job(schedule.cron)
    assert fields == cron_fields and user == "root"


def test_the_service_runs_the_quiet_drill_from_absolute_paths_bounded_and_at_low_priority(
    tmp_path,
):
    service = unit(plan(tmp_path).service)["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == (
        f"{PROGRAM[0]} drill --quiet {tmp_path}/scenarios --db ${{RESTORE_TESTS_DB}}"
    )
    assert service["WorkingDirectory"] == str(tmp_path)
    assert service["Environment"] == f'"RESTORE_TESTS_DB=sqlite:///{tmp_path}/results.db"'
    assert service["TimeoutStartSec"] == "12h"
    assert service["KillMode"] == "process"  # the drill stops its own restores
    assert (service["Nice"], service["IOSchedulingClass"]) == ("10", "best-effort")
    assert "EnvironmentFile" not in service


def test_the_cron_job_runs_the_same_drill_with_the_same_history_bound_and_niced(tmp_path):
    _, _, words = cron_job(plan(tmp_path).cron)
    assert words[:4] == ["cd", str(tmp_path), "&&", "export"]
    assert words[4] == f"RESTORE_TESTS_DB=sqlite:///{tmp_path}/results.db"
    run = words[words.index("exec") + 1 :]
    assert run[:4] == ["timeout", "-k", "5m", "12h"]
    assert run[4:7] == ["nice", "-n", "10"] and run[7] == "ionice"
    drill = run[run.index(PROGRAM[0]) :]
    assert drill == [
        *PROGRAM,
        "drill",
        "--quiet",
        f"{tmp_path}/scenarios",
        "--db",
        "$RESTORE_TESTS_DB",
    ]


def test_secrets_stay_in_the_environment_file_which_the_units_only_name(tmp_path):
    secrets = tmp_path / "drill.env"
    secrets.write_text(f"SHARE_PW='{SECRET}'\n")
    secrets.chmod(0o600)
    schedule = plan(tmp_path, environment_file=secrets)
    assert unit(schedule.service)["Service"]["EnvironmentFile"] == str(secrets)
    _, _, words = cron_job(schedule.cron)
    sourced = words.index("set")  # after the default history: the file may override it
    assert words[sourced : sourced + 8] == ["set", "-a", "&&", ".", str(secrets), "&&", "set", "+a"]
    assert sourced > words.index("export")
    assert all(SECRET not in text for text in (schedule.service, schedule.timer, schedule.cron))
    assert schedule.notes == (f"1 scenario in {tmp_path}/scenarios",)


def test_a_missing_environment_file_is_noted(tmp_path):
    secrets = tmp_path / "drill.env"
    assert plan(tmp_path, environment_file=secrets).notes[-1] == (
        f"{secrets} does not exist yet: create it (KEY=value lines, chmod 600)"
    )


def test_an_environment_file_readable_by_other_users_is_noted(tmp_path):
    secrets = tmp_path / "drill.env"
    secrets.write_text("SHARE_PW=x\n")
    secrets.chmod(0o644)
    assert plan(tmp_path, environment_file=secrets).notes[-1] == (
        f"{secrets} is readable by other users: chmod 600 it (it holds secrets)"
    )


def test_a_history_url_holding_a_password_is_refused_without_repeating_it(tmp_path):
    with pytest.raises(UsageError) as raised:
        plan(tmp_path, db_url="postgresql+psycopg://drill:hunter22@db.example/history")
    assert raised.value.exit_code == EXIT_USAGE
    assert "hunter22" not in str(raised.value)
    assert "PGPASSWORD" in str(raised.value)


@pytest.mark.parametrize("given", ["results.db", "sqlite:///results.db"])
def test_a_relative_sqlite_history_is_made_absolute_from_the_current_directory(
    tmp_path, monkeypatch, given
):
    monkeypatch.chdir(tmp_path)
    service = unit(plan(tmp_path, db_url=given).service)["Service"]
    assert service["Environment"] == f'"RESTORE_TESTS_DB=sqlite:///{tmp_path}/results.db"'


def test_a_postgresql_history_without_a_password_is_kept_as_given(tmp_path):
    url = "postgresql+psycopg://drill@db.example:5432/history"
    service = unit(plan(tmp_path, db_url=url).service)["Service"]
    assert service["Environment"] == f'"RESTORE_TESTS_DB={url}"'


def test_a_staging_folder_reaches_the_drill_through_its_environment_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    schedule = plan(tmp_path, work_dir=Path("staging"))
    assert unit(schedule.service)["Service"]["Environment"].splitlines() == [
        f'"RESTORE_TESTS_DB=sqlite:///{tmp_path}/results.db"',
        f'"RESTORE_TESTS_WORK_DIR={tmp_path}/staging"',
    ]
    _, _, words = cron_job(schedule.cron)
    assert f"RESTORE_TESTS_WORK_DIR={tmp_path}/staging" == words[words.index("export", 4) + 1]


def test_random_k_is_passed_to_the_drill_and_noted(tmp_path):
    schedule = plan(tmp_path, random_count=1)
    assert " drill --quiet --random 1 " in unit(schedule.service)["Service"]["ExecStart"]
    assert "--random" in cron_job(schedule.cron)[2]


def test_a_path_with_a_space_quote_and_percent_sign_survives_systemd_and_cron_quoting(tmp_path):
    odd = tmp_path / 'it\'s 100% "ours"'
    odd.mkdir()
    program = (str(odd / "restore-tests"),)
    schedule = plan(odd, program=program)
    service = unit(schedule.service)["Service"]
    escaped = str(odd).replace('"', '\\"').replace("%", "%%")
    assert service["ExecStart"].startswith(f'"{escaped}/restore-tests" drill --quiet "{escaped}/')
    assert service["WorkingDirectory"] == str(odd).replace("%", "%%")
    _, _, words = cron_job(schedule.cron)
    assert words[1] == str(odd) and str(odd / "scenarios") in words


def test_the_printed_text_labels_each_file_with_where_it_goes(tmp_path):
    text = as_text(plan(tmp_path), Path("/srv/units"), Path("/srv/cron"))
    labels = [line for line in text.splitlines() if line.startswith("# ---- ")]
    assert labels == [
        "# ---- /srv/units/restore-tests-drill.service ----",
        "# ---- /srv/units/restore-tests-drill.timer ----",
        "# ---- /srv/cron/restore-tests-drill (where systemd is not the init) ----",
    ]
    assert "systemctl enable --now restore-tests-drill.timer" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "drill.quarterly"}, "--name 'drill.quarterly': use 1 to 64 letters"),
        ({"at": "25:00"}, "--at '25:00': write a time of day as HH:MM"),
        ({"every": "fortnight"}, "--every 'fortnight': choose one of quarter, month, week"),
        ({"directory": Path("/nonexistent")}, "the working directory /nonexistent: no such folder"),
        ({"db_url": "sqlite:///a\nb.db"}, "a control character cannot be written"),
    ],
)
def test_a_mistake_in_the_request_is_a_usage_error_naming_the_option(tmp_path, change, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        plan(tmp_path, **change)


def test_a_missing_scenarios_folder_is_a_usage_error(tmp_path):
    request = ScheduleRequest("quarter", tmp_path / "nope", tmp_path, "results.db", PROGRAM)
    with pytest.raises(UsageError, match=f"--scenarios-dir {tmp_path}/nope: no such folder"):
        plan_schedule(request)


def test_an_invalid_scenario_fails_the_schedule_with_its_file_and_field(tmp_path):
    folder = scenario_folder(tmp_path)
    (folder / "broken.yaml").write_text("name: broken\nkind: files\nsource: {type: restic}\n")
    request = ScheduleRequest("quarter", folder, tmp_path, "results.db", PROGRAM)
    with pytest.raises(ScenarioError) as raised:
        plan_schedule(request)
    assert "broken.yaml" in str(raised.value)


def test_a_scenario_that_must_pass_more_often_than_the_drill_runs_is_noted(tmp_path):
    request = ScheduleRequest(
        "month", scenario_folder(tmp_path, every="7d"), tmp_path, "r.db", PROGRAM
    )
    assert plan_schedule(request).notes[1] == (
        "share must pass every 7d, more often than a monthly drill: it will show as OVERDUE"
    )


def test_the_program_is_the_console_script_it_was_started_as(tmp_path):
    script = tmp_path / "bin" / "restore-tests"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert program_command(str(script)) == (str(script),)


def test_the_program_started_as_a_python_file_runs_with_this_interpreter(tmp_path):
    cli = tmp_path / "cli.py"
    cli.write_text("")
    assert program_command(str(cli)) == (sys.executable, str(cli))


def test_otherwise_the_program_is_restore_tests_found_on_path(tmp_path, monkeypatch):
    script = tmp_path / "restore-tests"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert program_command("-c") == (str(script),)
