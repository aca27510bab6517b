"""Testing helpers for plugin authors: the conformance kit and a pytest plugin.

    from mtlzoo.testing import assert_conforms

    def test_my_plugin_conforms(mtlzoo_zoo):         # fixture from mtlzoo's pytest plugin
        assert_conforms(mtlzoo_zoo, "my_plugin")     # every part, every contract

``mtlzoo check my_plugin`` runs the same checks from the command line.
"""

from .kit import Report, Result, assert_conforms, check_entry, check_plugin, format_report

__all__ = ["check_plugin", "check_entry", "assert_conforms", "format_report", "Report", "Result"]
