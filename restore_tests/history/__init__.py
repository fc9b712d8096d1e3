"""The history of every drill: SQLAlchemy models, the store, and Alembic migrations."""
