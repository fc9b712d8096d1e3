"""The configuration file: defaults for command-line options, for cron and systemd units.

TOML, the `[tool.restore-tests]` table (so it may also live in a pyproject.toml):

    [tool.restore-tests]
    db = "/var/lib/restore-tests/results.db"    # every command's --db
    work_dir = "/var/tmp/restore-tests"          # every command that has --work-dir

    [tool.restore-tests.drill]                   # one command's own options
    jobs = 2

Found at --config, else $RESTORE_TESTS_CONFIG, else ./restore-tests.toml, else
/etc/restore-tests/config.toml. An option given on the command line or through its environment
variable wins over the file. Secrets never belong here: scenarios reference them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from restore_tests.errors import UsageError

CONFIG_VARIABLE = "RESTORE_TESTS_CONFIG"
SEARCHED = (Path("restore-tests.toml"), Path("/etc/restore-tests/config.toml"))
TABLE = "restore-tests"
# A top-level key names an option by what people write; the commands' parameters may differ.
PARAMETER_NAMES = {"db": "db_url"}


def find(given: Path | None) -> Path | None:
    """The file to read: --config, $RESTORE_TESTS_CONFIG (both must exist), else the first
    of the searched places that exists, else None."""
    named = given or (
        Path(os.environ[CONFIG_VARIABLE]) if os.environ.get(CONFIG_VARIABLE) else None
    )
    if named is not None:
        if not named.is_file():
            raise UsageError(f"configuration file {named} does not exist")
        return named
    return next((path for path in SEARCHED if path.is_file()), None)


def read(path: Path) -> dict[str, Any]:
    """The `[tool.restore-tests]` table of the file (empty when it has none)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"configuration file {path}: {error}") from error
    table = document.get("tool", {}).get(TABLE, {})
    if not isinstance(table, dict):
        raise UsageError(f"configuration file {path}: [tool.{TABLE}] must be a table")
    return table


def default_map(table: dict[str, Any], commands: dict[str, set[str]]) -> dict[str, Any]:
    """click's default_map: top-level keys for every command with that parameter, then the
    command's own table. commands maps each command to its parameter names. Unknown keys
    are errors: a typo must not silently leave a default in place."""
    shared = {key: value for key, value in table.items() if not isinstance(value, dict)}
    defaults: dict[str, dict[str, Any]] = {name: {} for name in commands}
    for key, value in shared.items():
        parameter = _parameter(key)
        users = [name for name, parameters in commands.items() if parameter in parameters]
        if not users:
            raise UsageError(f"configuration: unknown option {key!r}")
        for name in users:
            defaults[name][parameter] = value
    for name, own in table.items():
        if not isinstance(own, dict):
            continue
        if name not in commands:
            raise UsageError(f"configuration: [tool.{TABLE}.{name}] is not a command")
        for key, value in own.items():
            parameter = _parameter(key)
            if parameter not in commands[name]:
                raise UsageError(f"configuration: {name} has no option {key!r}")
            defaults[name][parameter] = value
    return defaults


def _parameter(key: str) -> str:
    return PARAMETER_NAMES.get(key) or key
