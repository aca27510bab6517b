"""Huge integers: every integer option has an upper bound, and validation answers any number in
one line (issue 21: 10**30 as a batch size, a dataset size or a boundary width used to pass
validation and fail deep inside torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import pytest
import yaml
from omegaconf import OmegaConf

from mtlzoo import ConfigError, option
from mtlzoo.contract.options import build_options
from mtlzoo.testing.fuzz import UNBOUNDED_BY_DESIGN, classify, huge_int_cases, unbounded_int_options
from mtlzoo.zoo.sections import ExperimentConfig


@pytest.mark.parametrize(
    "key, bound",
    [
        ("train.batch_size", ">= 1 and <= 65536"),
        ("data.train_size", ">= 0 and <= 10000000"),
        ("tasks.boundary.width", ">= 1 and <= 256"),
        ("train.epochs", ">= 1 and <= 100000"),
        ("augment.crop", ">= 1 and <= 16384"),
    ],
)
def test_a_huge_integer_is_refused_in_one_line_naming_the_key_and_the_bound(zoo, root, key, bound):
    value = "[64, 1000000000000000000000000000000]" if key == "augment.crop" else str(10**30)
    with pytest.raises(ConfigError) as err:
        zoo.spec(root / "configs" / "quickstart.yaml", [f"{key}={value}"])
    where = f"{key}[1]" if key == "augment.crop" else key
    assert str(err.value) == f"{where}: must be {bound}, got {10**30}"


def test_every_integer_option_of_the_sections_and_the_builtin_parts_has_an_upper_bound(zoo):
    unbounded = list(unbounded_int_options(ExperimentConfig, "spec"))
    for registry in zoo.registries:
        for entry in registry:
            if entry.builtin and entry.options is not None:
                unbounded += unbounded_int_options(entry.options, f"{entry.kind} {entry.name}")
    assert [u for u in unbounded if u.removeprefix("spec.") not in UNBOUNDED_BY_DESIGN] == []


@dataclass
class Inner:
    depth: Optional[list[int]] = None


@dataclass
class Outer:
    inner: Inner
    fine: int = option(1, le=3)
    rates: tuple[int, int] = option((1, 2), ge=0)
    scale: float = 1.0


def test_the_census_finds_an_unbounded_int_inside_nested_and_optional_fields():
    assert unbounded_int_options(Outer, "x") == ["x.inner.depth", "x.rates"]


@dataclass
class AllTypes:
    count: int = option(1, ge=1, le=10)
    free: int = 0
    maybe: Optional[int] = None
    ratio: float = option(0.5, ge=0, le=1)
    scale: float = 1.0
    sizes: list[int] = option([1], ge=1, le=64)
    mode: Literal["a", "b"] = "a"
    name: str = "x"
    flag: bool = False
    table: dict[str, int] = option({}, le=5)


HUGE = [10**30, -(10**30), 2**63, 10**400, -(10**400), 10**5000, "9" * 5000, [10**5000]]


@pytest.mark.parametrize("field", list(AllTypes.__dataclass_fields__))
@pytest.mark.parametrize(
    "value", HUGE, ids=["1e30", "-1e30", "2**63", "1e400", "-1e400", "1e5000", "str", "list"]
)
def test_option_validation_answers_any_huge_number_in_one_line(field, value):
    try:
        got = build_options(AllTypes, {field: value}, "part", "head 'x'")
    except ConfigError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith(f"part.{field}") and len(text) < 300, text
    else:  # only a float option without an upper bound takes a huge number (as a float), a str option text
        assert (field == "scale" and value in (10**30, -(10**30), 2**63)) or (
            field == "name" and value == "9" * 5000
        )
        assert got.scale == float(value) if field == "scale" else got.name == value


def test_the_messages_of_numbers_too_long_to_read():
    def message(field, value, schema=AllTypes):
        with pytest.raises(ConfigError) as err:
            build_options(schema, {field: value}, "part", "head 'x'")
        return str(err.value)

    assert message("free", 10**5000) == (
        "part.free: must be a 64-bit integer (-2**63 to 2**63 - 1), got an integer of about 5001 digits"
    )
    assert (
        message("count", -(10**400))
        == "part.count: must be >= 1 and <= 10, got a negative integer of 401 digits"
    )
    assert message("count", 10**30) == f"part.count: must be >= 1 and <= 10, got {10**30}"
    assert message("ratio", 10**400) == "part.ratio: must be a finite number, got an integer of 401 digits"
    assert message("free", "9" * 5000) == "part.free: must be a 64-bit integer, got an integer of 5000 digits"
    assert message("mode", 10**400) == "part.mode: an integer of 401 digits is not one of 'a', 'b'"
    assert message("sizes", [1, 10**5000]) == (
        "part.sizes[1]: must be >= 1 and <= 64, got an integer of about 5001 digits"
    )
    assert message("name", [10**5000]) == (
        "part.name: expected a string, got a list holding an integer too long to print (list) (quote it in YAML)"
    )
    assert message(10**5000, 1, None) == (
        "part[an integer of about 5001 digits]: head 'x' takes no options; remove a list holding an integer "
        "too long to print"
    )


def test_every_number_of_the_quickstart_replaced_by_a_huge_integer_is_one_line(zoo, root):
    full = OmegaConf.to_container(zoo.spec(root / "configs" / "quickstart.yaml"))
    cases = list(huge_int_cases(full, values=(10**30, 10**5000)))
    keys = {key for key, _, is_int, _ in cases if is_int}
    assert {"train.batch_size", "data.train_size", "tasks.boundary.width", "data.size[0]", "seed"} <= keys
    outcomes = {}
    for key, value, is_int, case in cases:
        outcome = classify(zoo.spec, case)
        assert not outcome.startswith("traceback"), (key, outcome)
        outcomes[key, value] = outcome
        if is_int:
            assert outcome == "one-line", key
    # a float option without an upper bound takes 1e30 (the learning rate), never 10**5000
    assert outcomes["train.optimizer.lr", 10**30] == "valid"
    assert outcomes["train.optimizer.lr", 10**5000] == "one-line"


def test_a_spec_file_with_a_huge_integer_is_one_line(zoo, tmp_path, root):
    spec = yaml.safe_load((root / "configs" / "quickstart.yaml").read_text())
    spec["data"]["train_size"] = 10**30
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"^data.train_size: must be >= 0 and <= 10000000, got 10{30}$"):
        zoo.spec(path)


def test_an_integer_beyond_pythons_digit_limit_anywhere_in_a_spec_is_one_line(tmp_path, capsys):
    from mtlzoo.apps.cli import main

    huge = "9" * 5000
    cases = {
        "value.yaml": f"train:\n  epochs: {huge}\n",
        "key.yaml": "name: x\ntasks: {" + huge + ": {type: depth}}\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert main(["config", "show", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / name}"), err
    assert main(["config", "show", "configs/quickstart.yaml", f"train.epochs={huge}"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: train.epochs: must be a 64-bit integer, got an integer of 5000 digits"
    )
