"""Fixtures of tests/security, defined in security_stack.py: a module of its own name, so
that tests import its helpers unambiguously (every test folder has a conftest)."""

from security_stack import project, secured  # noqa: F401
