"""Fault tests reuse the end-to-end stack fixture."""
from tests.e2e.conftest import make_stack  # noqa: F401  (re-exported fixture)
