"""benchmarks/profile_step.py: where one row of a bench spends its step; NDDR's fusion convs
(weight [C, T*C, 1, 1]) are counted, hard sharing has none, an unknown row names the rows.
No timing is asserted."""

from __future__ import annotations

import importlib.util
import re

import yaml
from conftest import ROOT, tiny_spec


def load_script():
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "benchmarks" / "profile_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fusion_weights_and_the_weight_among_a_convs_inputs():
    script = load_script()
    assert script.is_fusion_conv([64, 320, 1, 1], 5)
    assert not script.is_fusion_conv([64, 320, 1, 1], 4)  # 320 = 5 x 64, not 4 x 64
    assert not script.is_fusion_conv([64, 320, 3, 3], 5)  # not 1x1
    assert not script.is_fusion_conv([64, 64, 1, 1], 1)  # one task: nothing is fused
    # forward: (input, weight, ...); backward: (grad_output, input, weight, ...)
    assert script.conv_weight([[8, 3, 32, 32], [16, 3, 3, 3], [16], []]) == [16, 3, 3, 3]
    assert script.conv_weight([[8, 16, 32, 32], [8, 3, 32, 32], [16, 3, 3, 3], []]) == [16, 3, 3, 3]
    assert script.conv_weight([[8, 16], [16]]) is None


def test_nddr_fusion_is_counted_and_hps_has_none(tmp_path, monkeypatch, capsys):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_spec()))
    bench = {
        "name": "tiny",
        "base": "base.yaml",
        "grid": {"model.architecture": ["hps", "nddr"]},
        "seeds": [0],
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    monkeypatch.chdir(tmp_path)
    script = load_script()
    found = {}
    for row in ("hps + sum", "nddr + sum"):
        assert script.main(["bench.yaml", "--row", row, "--steps", "1", "--warmup", "1"]) == 0
        out = capsys.readouterr().out
        total = float(re.search(rf"^{re.escape(row)}: ([\d.]+) CPU s per step", out, re.M).group(1))
        fusion, of = re.search(
            r"concatenated maps \(weight \[C, 3C, 1, 1\]\): ([\d.]+) of ([\d.]+)", out
        ).groups()
        assert float(of) == total > 0
        found[row] = float(fusion)
        weights = re.findall(r"^\| (\[[\d, ]+\]) \|", out, re.M)
        assert weights and all(len(yaml.safe_load(w)) == 4 for w in weights)
        if row == "nddr + sum":  # the cnn backbone's 3 stages, 8/16/32 channels, each fused over 3 tasks
            assert {"[8, 24, 1, 1]", "[16, 48, 1, 1]", "[32, 96, 1, 1]"} <= set(weights)
    assert found["hps + sum"] == 0 and found["nddr + sum"] > 0
    # --expect-fusion: hps has no fusion convs, so a share of 0.5 is refused and 0.05 holds
    assert script.main(["bench.yaml", "--row", "hps + sum", "--steps", "1", "--expect-fusion", "0.5"]) == 1
    assert "the fusion convs' share moved: 0.00, expected 0.50 +- 0.1" in capsys.readouterr().out
    assert script.main(["bench.yaml", "--row", "hps + sum", "--steps", "1", "--expect-fusion", "0.05"]) == 0
    assert script.main(["bench.yaml", "--row", "mtan + sum"]) == 2
    err = capsys.readouterr().err
    assert "no row 'mtan + sum' in bench.yaml; its rows: hps + sum, nddr + sum, single-task" in err
