"""The results database: SQLAlchemy 2 models (``db.models``), engines and
sessions (``db.session``), every query in one place (``db.queries``) and
programmatic Alembic (``db.migrate``). Imports nothing from evaluation,
sandbox or generation."""
