"""Fixtures of tests/gateway, defined in gateway_stack.py: a module of its own name, so
that tests import its helpers unambiguously (every test folder has a conftest)."""

from gateway_stack import gw  # noqa: F401
