"""Deliberately broken plugins: each fails in a different way."""
