"""Smoke tests of benchmarks/performance.py: its pure functions (FLOP counting, statistics,
parsing, alternation order, report rendering). No timing is asserted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def perf():
    spec = importlib.util.spec_from_file_location(
        "mtlzoo_bench_performance", ROOT / "benchmarks" / "performance.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def test_matmul_flops(perf):
    assert perf.matmul_flops(2, 3, 4) == 48
    assert perf.matmul_flops(2048, 2048, 2048) == 2 * 2048**3


def test_count_flops_linear_forward_backward(perf):
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)  # no grad: backward computes the weight gradient only

    def step():
        layer(x).sum().backward()

    total, by_op = perf.count_flops(step)
    # forward [2,4]@[4,3]: 2*2*4*3 = 48; weight grad [3,2]@[2,4]: 2*3*2*4 = 48
    assert total == 96
    assert sum(by_op.values()) == 96


def test_count_flops_conv_with_and_without_input_grad(perf):
    conv = nn.Conv2d(2, 4, 3, padding=1)
    # forward: 2 * (1*4*5*5 outputs) * (2*3*3 terms) = 3600; each gradient (weight, input) as much again
    x = torch.randn(1, 2, 5, 5)
    total, by_op = perf.count_flops(lambda: conv(x).sum().backward())
    assert total == 3600 * 2
    assert perf.flops_by_category(by_op) == {"convolution": 7200}
    xg = torch.randn(1, 2, 5, 5, requires_grad=True)
    total, _ = perf.count_flops(lambda: conv(xg).sum().backward())
    assert total == 3600 * 3


def test_count_flops_tiny_cnn_by_hand(perf):
    # conv 3->8 3x3 on 8x8 (padding 1) -> relu -> global pool -> linear 8->2, batch 2, input without grad
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    )
    x = torch.randn(2, 3, 8, 8)
    conv_fwd = 2 * (2 * 8 * 8 * 8) * (3 * 3 * 3)  # 55296
    lin_fwd = 2 * 2 * 8 * 2  # 64
    # backward: conv weight grad only (= conv_fwd); linear: weight grad and input grad (= 2 * lin_fwd)
    expected = conv_fwd * 2 + lin_fwd * 3
    total, _ = perf.count_flops(lambda: model(x).sum().backward())
    assert total == expected


def test_summarize_and_ratios(perf):
    s = perf.summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 5.0 and s["n"] == 5
    assert s["p25"] == 2.0 and s["p75"] == 4.0
    small = perf.summarize([2.0, 1.0])
    assert (small["p25"], small["median"], small["p75"]) == (1.0, 1.5, 2.0)
    assert perf.round_ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
    with pytest.raises(ValueError):
        perf.round_ratios([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        perf.summarize([])


def test_effect_words_need_both_estimates(perf):
    assert perf.effect(1.5, 1.3) == "faster"
    assert perf.effect(0.5, 0.8) == "slower"
    assert perf.effect(1.01, 0.98) == "no change beyond 5%"
    assert perf.effect(1.5, 0.9).startswith("unclear")


def test_fast_estimates_and_contention(perf):
    # below 10 samples the fast time is the minimum
    assert perf.fast_ratio([3.0, 1.2, 9.0], [1.0, 4.0]) == pytest.approx(1.2)
    # 21 samples: index int(0.1 * 20) = 2, the third fastest; one lucky sample does not decide
    times = [0.1] + [1.0 + i for i in range(20)]
    assert perf.fast_time(times) == 2.0
    assert perf.fast_rate([float(i) for i in range(21)]) == 18.0
    assert perf.contended_share([1.0, 1.5, 2.5, 10.0]) == 0.5


def test_parse_cpuinfo(perf):
    text = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC 9454\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 sse\n\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    info = perf.parse_cpuinfo(text)
    assert info["model_name"] == "AMD EPYC 9454"
    assert (info["family"], info["model"]) == (25, 17)
    assert info["flags"] == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert perf.parse_cpuinfo("")["model_name"] == "unknown"


@pytest.mark.parametrize(
    "name,category",
    [
        ("aten::mkldnn_convolution", "convolution"),
        ("aten::convolution_backward", "convolution"),
        ("sm90_xmma_fprop_implicit_gemm_tf32", "convolution"),
        ("aten::addmm", "matmul"),
        ("aten::native_batch_norm_backward", "batch norm"),
        ("aten::upsample_bilinear2d_backward", "resize (upsample)"),
        ("aten::max_pool2d_with_indices", "pooling"),
        ("aten::_foreach_addcdiv_", "optimizer"),
        ("Optimizer.step#AdamW.step", "optimizer"),
        ("aten::nll_loss2d_forward", "loss"),
        ("aten::copy_", "memory (copy/cat/layout)"),
        ("aten::fill_", "fill (zeroing; NaN fill of new tensors in deterministic mode)"),
        ("aten::threshold_backward", "elementwise (activations, add, mul...)"),
        ("aten::add_", "elementwise (activations, add, mul...)"),
        ("something_unheard_of", "other"),
    ],
)
def test_categorize_op(perf, name, category):
    assert perf.categorize_op(name) == category


def test_flops_by_category(perf):
    by_op = {"aten.convolution": 10, "aten.convolution_backward": 20, "aten.addmm": 3, "aten.mm": 4}
    assert perf.flops_by_category(by_op) == {"convolution": 30, "matmul": 7}


def test_alternate_runs_abba_and_counts_steps(perf):
    calls = []
    fns = {"a": (lambda: calls.append("a"), 2), "b": (lambda: calls.append("b"), 1)}
    times = perf.alternate(fns, rounds=3)
    assert calls == ["a", "a", "b", "b", "a", "a", "a", "a", "b"]
    assert [len(times["a"]), len(times["b"])] == [3, 3]
    assert all(t >= 0 for t in times["a"] + times["b"])


def test_alternate_runs_first_at_the_start_of_every_round(perf):
    calls = []
    fns = {n: (lambda n=n: calls.append(n), 1) for n in ("a", "b", "mm")}
    times = perf.alternate(fns, rounds=2, first="mm")
    assert calls == ["mm", "a", "b", "mm", "b", "a"]
    assert len(times["mm"]) == 2


def test_alternate_budget_stops_after_a_complete_pair(perf):
    calls = []
    times = perf.alternate(
        {"a": (lambda: calls.append("a"), 1), "b": (lambda: calls.append("b"), 1)}, rounds=10, max_seconds=0.0
    )
    assert calls == ["a", "b", "b", "a"]
    assert len(times["a"]) == 2


def test_format_table(perf):
    assert perf.format_table(("x", "y"), [(1, "a"), (2, "b")]) == "| x | y |\n|---|---|\n| 1 | a |\n| 2 | b |"


def _fake_results(perf, ratio: float, device: str = "cpu"):
    s = lambda v: perf.summarize([v, v])  # noqa: E731
    res = perf.Results(
        command="python benchmarks/performance.py --quick",
        plan=perf.asdict(perf.Plan(batch_size=8, image_size=64)),
        machine={
            "cpu": "AMD EPYC",
            "cpu_flags": "avx2, avx512_bf16",
            "cores": "2",
            "torch": "2.x",
            "threads": 2,
            "cpu_capability": "AVX512",
            "device": device,
            "python": "3",
            "mkldnn": True,
            **({"gpu": "H100", "tf32": "x"} if device == "cuda" else {}),
        },
        load_before="1 / 1 / 1",
        load_after="1 / 1 / 1",
        seconds=60,
    )
    res.workload = {
        "spec": "configs/quickstart.yaml",
        "overrides": ["train.batch_size=8"],
        "tasks": {"semseg": "segmentation (CrossEntropyLoss)"},
        "combiner": "sum",
        "backbone": {"name": "timm"},
        "heads": {"semseg": "fcn"},
        "image": [8, 3, 64, 64],
        "parameters": 11_000_000,
        "shared": 10_000_000,
        "deterministic": True,
        "max_stride": 32,
    }
    res.overhead = {
        "mtlzoo_s": s(ratio),
        "hand_s": s(1.0),
        "ratio": s(ratio),
        "ratios": [ratio, ratio],
        "images_per_s": {"mtlzoo": 8 / ratio, "hand": 8.0},
        "first_step_s": {"mtlzoo": 2, "hand": 2},
        "fast_ratio": ratio,
        "contended": 0.25,
        "param_diff_after_first_step": 0.0,
        "cprofile": [("train.py:1 _to", 1.0, 1e-5, 1e-5)],
    }

    def row(name, f, t):
        return {
            "name": name,
            "flops": f,
            "seconds": t,
            "flops_per_s": f / t,  # noqa: E731
            "fraction": f / t / 1e11,
            "fast_seconds": t / 2,
            "fast_flops_per_s": 2 * f / t,
            "fast_fraction": 2 * f / t / 1.1e11,
            "samples": 3,
        }

    res.efficiency = {
        "matmul_n": 2048,
        "peak_fp32": 1e11,
        "peak_fp32_max": 1.1e11,
        "peak_fp32_min": 0.9e11,
        "peak_samples": 4,
        "peak_bf16": 2e11,
        "peak_bf16_fast": 2.2e11,
        "peak_fp32_fast": 1.1e11,
        "rows": [
            row("mtlzoo", 1e10, 1.0),
            row("hand", 1e10, 1.0),
            row("bb", 7e9, 0.5),
            row("small", 7e9, 0.5),
            row("224", 8e10, 1.5),
        ],
        "flops_by_category": {"convolution": 1e10},
        "profile": {"convolution": 0.5, "fill (zeroing; NaN fill)": 0.2, "other": 0.3},
        "head_flops": 3e9,
    }
    res.options = [
        {
            "name": "bf16 autocast",
            "overrides": ["train.amp=bf16"],
            "option_s": 0.5,
            "default_s": 1.0,
            "speedup": perf.summarize([1.9, 2.1]),
            "fast_speedup": 1.8,
            "first_step_s": 1.0,
            "rounds": 2,
            "steps": 1,
            "amp_dtype": "bfloat16",
            "grad_scaler": "none",
        },
        {"name": "backbone+heads .compile()", "overrides": [], "error": "did not finish within 10 s"},
    ]
    res.notes = ["a checked fact"]
    return res


def test_trainer_notes_reflect_the_code(perf):
    import inspect

    from mtlzoo.runtime.train import Trainer

    uses_scaler = "scaler" in inspect.getsource(Trainer.train_step)
    assert any("GradScaler" in n for n in perf.trainer_notes()) is not uses_scaler


def test_render_reports_verdicts(perf):
    good = perf.render(_fake_results(perf, 1.01))
    assert "**Median per-round ratio mtlzoo / hand-written: 1.010**" in good
    assert "target <= 1.03: meets it" in good
    assert "**1.010**, meets it" in good
    assert "25% of all steps" in good
    assert "`python benchmarks/performance.py --quick`" in good
    assert "**mtlzoo step: 18% of the fp32 matmul peak (fast estimate; median 10%)**" in good
    assert "bf16 autocast: faster (2.00x median, 1.80x fast-step)" in good
    assert "2.0x the fp32 rate" in good
    assert "- a checked fact" in good
    assert "The fastest setting here is bf16 autocast" in good
    assert "did not finish within 10 s" in good
    assert "avx512_bf16" in good
    assert "20% of the step is `aten::fill_`" in good
    assert "so what bounds it is the network on this machine, not mtlzoo" in good
    bad = perf.render(_fake_results(perf, 1.10, device="cuda"))
    assert "target <= 1.03: misses it" in bad
    assert "| GPU | H100 |" in bad
