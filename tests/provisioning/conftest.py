from tests.collector.conftest import sessions, store  # noqa: F401  (shared fixtures)
