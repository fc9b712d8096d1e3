"""Alembic environment: runs on the connection the store hands over (or a URL from the config)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from restore_tests.history.models import Base

config = context.config
connection = config.attributes.get("connection")


def run() -> None:
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///results.db")
    with engine.begin() as own_connection:
        context.configure(
            connection=own_connection, target_metadata=Base.metadata, render_as_batch=True
        )
        context.run_migrations()


run()
