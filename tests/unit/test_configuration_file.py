"""The configuration file's table becomes click's default_map; mistakes are usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from restore_tests import config
from restore_tests.errors import UsageError

COMMANDS = {
    "history": {"db_url", "limit"},
    "drill": {"db_url", "jobs", "work_dir"},
    "prune": {"db_url", "work_dir"},
}


def test_a_top_level_key_is_the_default_of_every_command_that_has_the_option() -> None:
    table = {"db": "/var/lib/restore-tests/results.db", "work_dir": "/var/tmp/rt"}

    defaults = config.default_map(table, COMMANDS)

    assert defaults == {
        "history": {"db_url": "/var/lib/restore-tests/results.db"},
        "drill": {"db_url": "/var/lib/restore-tests/results.db", "work_dir": "/var/tmp/rt"},
        "prune": {"db_url": "/var/lib/restore-tests/results.db", "work_dir": "/var/tmp/rt"},
    }


def test_a_command_table_sets_that_command_only_and_wins_over_the_top_level() -> None:
    table = {"db": "a.db", "drill": {"jobs": 2, "db": "b.db"}}

    defaults = config.default_map(table, COMMANDS)

    assert defaults["drill"] == {"db_url": "b.db", "jobs": 2}
    assert defaults["history"] == {"db_url": "a.db"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"databse": "x"}, "configuration: unknown option 'databse'"),
        ({"drill": {"job": 2}}, "configuration: drill has no option 'job'"),
        ({"dril": {"jobs": 2}}, "configuration: [tool.restore-tests.dril] is not a command"),
    ],
)
def test_a_typo_in_the_file_is_an_error_naming_it(table: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        config.default_map(table, COMMANDS)

    assert str(raised.value) == message


def test_only_the_tool_table_is_read_and_a_broken_file_is_named(tmp_path: Path) -> None:
    good = tmp_path / "pyproject.toml"
    good.write_text('[project]\nname = "x"\n\n[tool.restore-tests]\ndb = "h.db"\n')
    broken = tmp_path / "broken.toml"
    broken.write_text("[tool.restore-tests\n")

    assert config.read(good) == {"db": "h.db"}
    with pytest.raises(UsageError) as raised:
        config.read(broken)
    assert str(raised.value).startswith(f"configuration file {broken}: ")


def test_a_named_configuration_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as raised:
        config.find(tmp_path / "missing.toml")

    assert str(raised.value) == f"configuration file {tmp_path / 'missing.toml'} does not exist"
