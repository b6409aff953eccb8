"""Fixtures of tests/worker, defined in worker_shared.py: a module of its own name, so
that tests import its helpers unambiguously (every test folder has a conftest)."""

from worker_shared import scratch_root, shared_js, shared_worker  # noqa: F401
