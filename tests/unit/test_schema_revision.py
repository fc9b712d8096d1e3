"""The store's idea of the newest schema matches the migrations on disk."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from restore_tests.history.store import MIGRATIONS, SCHEMA_REVISION


def scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def test_the_store_knows_the_newest_migration_as_its_schema_revision() -> None:
    assert scripts().get_current_head() == SCHEMA_REVISION == "0003"


def test_the_migrations_are_one_line_from_the_first_schema_to_the_newest() -> None:
    chain = [script.revision for script in scripts().walk_revisions()]

    assert chain == ["0003", "0002", "0001"]  # newest first; a branch would need a merge revision
    assert scripts().get_revision("0003").down_revision == "0002"
