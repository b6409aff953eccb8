"""Helpers shared by the test folders (importable as `support`: tests/ is on sys.path through
tests/conftest.py): subprocess environments, reading metrics registries, SSE frames."""
