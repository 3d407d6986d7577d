"""The results database: SQLAlchemy 2 models (``db.models``), engines and
sessions (``db.session``, ``db.engine``), the queries as one repository module
per aggregate (``db.experiments``: creation and the state machine;
``db.results``: measurements, scores, probes, reuse, anchor curves;
``db.rankings``: leaderboard and recent failures; ``db.catalog``: campaigns,
clips, candidates; ``db.hashing``: the identifying hashes; read-only
``db.campaign_queries`` and ``db.report_queries``) and programmatic Alembic
(``db.migrate``). Imports nothing from sandbox or generation, and of evaluation
only ``evaluation.results``, a leaf that imports nothing of the project: a stored
rate point is read as the same ``RatePoint`` a measurement produces
(``db.results.stored_points``), so leaderboard, campaign and report reads have
one shape."""
