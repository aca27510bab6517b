"""The Python examples of README.md and docs/plugins.md run as written."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/plugins.md"]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_documents_have_python_examples():
    assert all(python_blocks(ROOT / doc) for doc in DOCS)


@pytest.mark.slow  # every example of the docs, the README training one included
@pytest.mark.parametrize("doc, index", [(d, i) for d in DOCS for i in range(len(python_blocks(ROOT / d)))])
def test_example_runs(doc, index, monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples use repository paths (configs/...)
    code = python_blocks(ROOT / doc)[index]
    name = f"mtlzoo_doc_example_{Path(doc).stem}_{index}"
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)  # examples hand their own module to a zoo
    exec(compile(code, f"{doc} example {index + 1}", "exec"), module.__dict__)  # noqa: S102 - our own docs
