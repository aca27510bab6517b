"""mtlzoo's pytest plugin (registered through the ``pytest11`` entry point when mtlzoo is installed).

Fixtures:

* ``mtlzoo_zoo``: one :class:`~mtlzoo.Zoo` of the installed plugins per test session, loaded
  strictly (a plugin that fails to load or has refused entries fails the tests).
* ``mtlzoo_conforms``: ``mtlzoo_conforms("my_plugin", kinds=None)`` runs the conformance kit
  on a plugin's parts and fails the test with every broken contract. It is hermetic: the
  plugin is checked among the built-ins only, and other installed plugins (broken or not)
  change nothing.

Loading this plugin imports nothing heavy; the fixtures load plugins only when a test asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mtlzoo.zoo.zoo import Zoo


@pytest.fixture(scope="session")
def mtlzoo_zoo() -> Zoo:
    """The installed plugins, loaded once and strictly."""
    from mtlzoo import Zoo

    return Zoo.load(strict=True)


@pytest.fixture(scope="session")
def _mtlzoo_kit_zoo() -> Zoo:
    """The installed plugins, loaded once and leniently: the kit reports the checked plugin's
    own load failures itself, and another plugin's failures must not fail its tests."""
    from mtlzoo import Zoo

    return Zoo.load(strict=False)


@pytest.fixture
def mtlzoo_conforms(_mtlzoo_kit_zoo: Zoo) -> Callable[..., Any]:
    """``mtlzoo_conforms(plugin, kinds=None)``: assert every part of ``plugin`` keeps its
    contracts, among the built-ins and ``plugin`` only (hermetic: whatever else is installed,
    broken or not, changes nothing)."""
    from mtlzoo.testing.kit import assert_conforms

    def run(plugin: str, kinds: Iterable[str] | None = None) -> Any:
        return assert_conforms(_mtlzoo_kit_zoo, plugin, kinds)

    return run
