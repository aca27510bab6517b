"""Deliberately broken plugins: each module fails in a different way; bad_parts has one broken
part per contract, for the conformance kit."""
