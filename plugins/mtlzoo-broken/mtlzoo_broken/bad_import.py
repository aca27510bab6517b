"""Fails on import, as a plugin with a missing dependency does."""

import mtlzoo_dependency_that_is_not_installed  # noqa: F401
