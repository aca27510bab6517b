"""Example third-party plugin package for mtlzoo."""
