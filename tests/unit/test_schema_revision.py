"""The store's idea of the newest schema matches the migrations on disk."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from restore_tests.history.store import MIGRATIONS, SCHEMA_REVISION


def test_the_store_knows_the_newest_migration_as_its_schema_revision() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION
