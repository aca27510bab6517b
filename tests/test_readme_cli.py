"""The README's command-line passages say what the commands really print."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mtlzoo.apps.cli import main
from mtlzoo.contract.hooks import KINDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def error_examples() -> list[tuple[str, str]]:
    """``($ command, the line it prints)`` pairs of the README's block of mistakes."""
    block = README.split("Mistakes get one line naming the key path and the fix", 1)[1]
    block = block.split("```\n", 1)[1].split("```", 1)[0]
    lines = block.strip().splitlines()
    return [(lines[i][2:], lines[i + 1]) for i in range(0, len(lines), 2)]


def test_the_readme_shows_commands_beside_their_errors():
    pairs = error_examples()
    assert len(pairs) >= 2 and all(cmd.startswith("mtlzoo ") for cmd, _ in pairs)


@pytest.mark.parametrize("command, printed", error_examples())
def test_each_readme_error_is_what_the_command_prints(command, printed, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    try:
        rc = main(shlex.split(command)[1:])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    if printed.endswith("..."):  # the README shortens the end of a long line
        assert err.startswith(printed[:-3]), err
    else:
        assert err == printed


def test_the_readme_list_comment_names_every_kind():
    comment = re.search(r"mtlzoo list +# every kind: (.*)", README).group(1)
    assert comment.split(", ") == list(KINDS)
