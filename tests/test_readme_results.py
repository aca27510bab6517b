"""The README's result paragraphs quote the committed benchmark tables: every figure they
state is recomputed here from ``benchmarks/results/*.csv``, so regenerating a table without
updating the README (or the other way round) fails."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics

import pytest


@pytest.fixture
def readme(root) -> str:
    """The README with line breaks folded, so a quoted phrase may wrap anywhere."""
    return re.sub(r"\s+", " ", (root / "README.md").read_text())


def table(root, name: str) -> dict[str, dict[str, float]]:
    """``{method: {column: value}}`` of a committed bench table (empty cells left out)."""
    rows = csv.DictReader(open(root / "benchmarks" / "results" / f"{name}.csv"))
    return {
        r["method"]: {k: float(v) for k, v in r.items() if k not in ("method", "setting") and v} for r in rows
    }


def signed(x: float, digits: int = 1) -> str:
    """``+1.3``, ``-0.5``; a value that rounds to zero has no sign (``0.0``)."""
    text = f"{x:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def span(values, digits: int = 1, toward_zero_first: bool = False) -> str:
    """``lo% to hi%`` as the README writes a range; a range of losses starts at the smaller one."""
    lo, hi = min(values), max(values)
    if toward_zero_first:
        lo, hi = hi, lo
    return f"{signed(lo, digits)}% to {signed(hi, digits)}%"


def test_the_camvid_paragraph_quotes_its_table(root, readme):
    t = table(root, "camvid")
    combiners = ("sum", "dwa", "uncertainty", "pcgrad")
    st = t["single-task (semseg)"]["semseg.miou_mean"]
    quoted = ", ".join(f"{t[c]['semseg.miou_mean']:.3f} (`{c}`)" for c in combiners[:3])
    quoted += f", {t['pcgrad']['semseg.miou_mean']:.3f} (`pcgrad`) against {st:.3f} for segmentation alone"
    assert f"test mIoU {quoted}" in readme
    gains = [100 * (t[c]["semseg.miou_mean"] - st) for c in combiners]
    assert f"{signed(min(gains))} to {signed(max(gains))} points" in readme
    stds = [r["semseg.miou_std"] for r in t.values() if "semseg.miou_std" in r]
    assert f"(std {min(stds):.3f}-{max(stds):.3f})" in readme
    assert (
        f"Δm is positive for all four combiners ({span([t[c]['delta_m_mean'] for c in combiners])})" in readme
    )
    labels = [t[c]["delta_m.labels_mean"] for c in combiners]
    assert f"image-label task ({span(labels, 0)})" in readme
    boundary = [t[c]["delta_m.boundary_mean"] for c in combiners]
    assert f"single-task model ({span(boundary, toward_zero_first=True)})" in readme


def test_the_shapes_architecture_paragraph_quotes_its_table(root, readme):
    t = table(root, "shapes_architectures")

    def rows(prefix: str) -> list[dict[str, float]]:
        return [r for m, r in t.items() if m.startswith(prefix + " + ") or m.startswith(prefix + "(")]

    def dm(prefix: str) -> list[float]:
        return [r["delta_m_mean"] for r in rows(prefix)]

    def millions(prefix: str) -> str:
        return f"{rows(prefix)[0]['parameters_total'] / 1e6:.1f}M"

    assert (
        f"(Δm {span(dm('mtan'))}, against {span(dm('hps'), toward_zero_first=True)} for hard sharing)"
        in readme
    )
    assert f"with {millions('mtan')} parameters against hps's {millions('hps')}" in readme
    assert f"`cross_stitch` reaches {span(dm('cross_stitch'))} with {millions('cross_stitch')}" in readme
    assert f"`nddr` {span(dm('nddr'))}" in readme
    moe = ["cgc", "dselect_k", "mmoe", "ple", "ltb"]
    quoted = ", ".join(f"`{name}` {span(dm(name), toward_zero_first=True)}" for name in moe)
    assert f"The mixture-of-experts family does not beat hard sharing here: {quoted}" in readme
    totals = [r["parameters_total"] for name in moe for r in rows(name)]
    assert f"({min(totals) / 1e6:.1f}M to {max(totals) / 1e6:.1f}M parameters)" in readme
    assert max(max(dm(name)) for name in moe) < 0
    header = (root / "benchmarks" / "results" / "shapes_architectures.md").read_text()
    cells, minutes = re.search(
        r"(\d+) of \1 cells committed.*?all committed cells together ([\d.]+) min", header, re.S
    ).groups()
    assert f"{cells} cells in {minutes} min of one core" in readme
    losses = max(dm("mti_net")) < 0  # a range of losses starts at the smaller one
    assert (
        f"`padnet` ({span(dm('padnet'))}) and `mti_net` ({span(dm('mti_net'), toward_zero_first=losses)})"
        in readme
    )
    hps_depth = rows("hps")[0]["depth.abs_err_mean"]
    st_depth = t["single-task (depth)"]["depth.abs_err_mean"]
    assert f"(abs_err {hps_depth:.1f} for hps, {st_depth:.1f} single-task" in readme
    padnet, mti = rows("padnet")[0]["depth.abs_err_mean"], rows("mti_net")[0]["depth.abs_err_mean"]
    assert f"their own distillation decoders do ({padnet:.2f} and {mti:.1f})" in readme
    assert (
        f"`mtan` is ahead of the single-task models on average with every combiner (Δm {span(dm('mtan'))}"
        in readme
    )
    by_combiner = {m.split(" + ")[1]: r["delta_m_mean"] for m, r in t.items() if m.startswith("hps + ")}
    gaps = [
        r["delta_m_mean"] - by_combiner[m.split(" + ")[1]] for m, r in t.items() if m.startswith("mtan + ")
    ]
    assert f"the mtan-over-hps gap ({min(gaps):.1f}-{max(gaps):.1f} points per combiner)" in readme
    stds = [r["delta_m_std"] for r in table(root, "shapes").values() if "delta_m_std" in r]
    assert f"3-seed shapes table is {min(stds):.1f}-{max(stds):.1f}%" in readme


def test_the_quick_loop_figures_are_the_measured_ones_and_still_near_the_suite(root, readme):
    # README quotes benchmarks/results/test_cost.md (python benchmarks/test_cost.py); the
    # measured counts must stay within 10% of what the suite holds today (rerun the script
    # when tests are added or removed in numbers)
    import subprocess
    import sys

    cost = re.sub(r"\s+", " ", (root / "benchmarks" / "results" / "test_cost.md").read_text())
    quick, slow = (
        int(x) for x in re.search(r"(\d+) tests not marked `slow` were measured \((\d+) are", cost).groups()
    )
    cpu, minutes = re.search(
        r"`pytest -n 2 -m \"not slow\"`: (\d+) CPU-s in all, about ([\d.]+) min", cost
    ).groups()
    assert f"leaves out the {slow} tests marked `slow`" in readme
    assert f"the other {quick} take {cpu} CPU-seconds, about {minutes} min on 2 cores" in readme
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-m", "slow", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=root,
    ).stdout
    marked, total = (int(x) for x in re.search(r"(\d+)/(\d+) tests collected", out).groups())
    assert abs((total - marked) - quick) <= 0.1 * quick, (total - marked, quick)
    assert abs(marked - slow) <= max(3, 0.1 * slow), (marked, slow)


def cell_pairs(
    root,
    row: str,
    bench: str = "camvid_pretrained",
    task: str = "semseg",
    metric: str = "miou",
    seeds: int = 5,
) -> tuple[list[float], list[float], list[float]]:
    """Test ``task.metric`` (mIoU by default) of the multi-task cells of ``row`` and of the
    single-task cells of ``task``, and the per-seed differences in points (seeds where both are
    committed), read from the committed cell files of ``bench``: an independent recomputation
    of the bench's paired comparison."""
    cells = root / "benchmarks" / "results" / bench / "cells"

    def value(cell: str) -> float | None:
        path = cells / f"{cell}.json"
        return json.loads(path.read_text())["summary"]["test"][task][metric] if path.is_file() else None

    mt = {s: value(f"{row}__seed{s}") for s in range(seeds)}
    st = {s: value(f"single_{task}__seed{s}") for s in range(seeds)}
    diffs = [100 * (mt[s] - st[s]) for s in range(seeds) if mt[s] is not None and st[s] is not None]
    return [v for v in mt.values() if v is not None], [v for v in st.values() if v is not None], diffs


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    from scipy import stats

    mean = statistics.fmean(diffs)
    half = stats.t.ppf(1 - (1 - level) / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def test_the_pretrained_camvid_answer_quotes_its_cells(root, readme):
    mt, st, diffs = cell_pairs(root, "all_tasks__combiner=sum")
    mean, low, high = t_interval(diffs)
    better = sum(d > 0 for d in diffs)
    assert (
        f"test mIoU {statistics.fmean(mt):.3f} with boundary and the rare-class image labels (`sum`, "
        f"{len(mt)} seeds) against {statistics.fmean(st):.3f} for segmentation alone ({len(st)} seeds)"
        in readme
    )
    assert (
        f"seed by seed {mean:+.2f} points [95% interval {low:+.2f} to {high:+.2f}], the multi-task model ahead "
        f"in {better} of {len(diffs)}" in readme
    )
    wl, _, wl_diffs = cell_pairs(root, "without_labels__combiner=sum")
    wl_mean, wl_low, wl_high = t_interval(wl_diffs)
    assert (
        f"with boundary alone {statistics.fmean(wl):.3f} ({len(wl)} seeds; {wl_mean:+.2f} points "
        f"[{wl_low:+.2f} to {wl_high:+.2f}], ahead in {sum(d > 0 for d in wl_diffs)} of {len(wl_diffs)})"
        in readme
    )
    files = list((root / "benchmarks" / "results" / "camvid_pretrained" / "cells").glob("*.json"))
    from mtlzoo.apps.bench.report import cell_cost

    minutes = [cell_cost(json.loads(f.read_text())["summary"])["seconds"] / 60 for f in files]
    each = f"({min(minutes):.0f}-{max(minutes):.0f} min each on this 2-core CPU"
    if len(files) == 80:
        assert f"All 80 cells of the study are committed {each}" in readme and "so far" not in readme
    else:
        assert f"{len(files)} of the study's 80 cells are committed so far {each}" in readme
    rows = csv.DictReader(open(root / "benchmarks" / "results" / "camvid_pretrained_per_class.csv"))
    per_class = [r for r in rows if r["method"] == "sum" and r["diff_vs_single_task"]]
    top = max(per_class, key=lambda r: abs(float(r["diff_vs_single_task"])))
    gains = sum(float(r["diff_vs_single_task"]) > 0 for r in per_class)
    assert (
        f"the largest change is {top['class']} {100 * float(top['diff_vs_single_task']):+.1f} points "
        f"and {gains} of {len(per_class)} classes gain" in readme
    )


def test_every_finished_row_of_the_pretrained_study_is_in_the_answer(root, readme):
    """A row of the study whose five seeds are committed is quoted against segmentation alone."""
    cells = root / "benchmarks" / "results" / "camvid_pretrained" / "cells"
    rows = {p.name.rsplit("__seed", 1)[0] for p in cells.glob("*.json")}
    quoted = 0
    for row in sorted(rows - {"single_semseg", "all_tasks__combiner=sum", "without_labels__combiner=sum"}):
        if row.startswith("single_"):
            continue
        mt, _, diffs = cell_pairs(root, row)
        if len(diffs) < 5:
            continue
        mean, low, high = t_interval(diffs)
        against_plain = (
            f"{mean:+.2f} points [{low:+.2f} to {high:+.2f}], ahead in {sum(d > 0 for d in diffs)} of 5"
        )
        if row.startswith("without_boundary_labels__"):  # a control: the architecture's own gain
            expected = f"({statistics.fmean(mt):.3f}, 5 seeds; the architecture alone: {against_plain} over"
        else:
            expected = f"{statistics.fmean(mt):.3f} ({against_plain})"
        assert expected in readme, row
        quoted += 1
    still_to_run = re.search(r"still to run: ([^.]*)\.", readme)
    assert quoted or still_to_run, "the answer neither quotes other rows nor says which are left"


def test_the_pretrained_answer_is_what_its_script_writes(root):
    """README's paragraph is benchmarks/camvid_pretrained_answer.py's output for the committed cells
    (the verdict, the rows still to run, the wrapping)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "benchmarks/camvid_pretrained_answer.py", "--check"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def load_answer_script(root):
    """benchmarks/camvid_pretrained_answer.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "answer", root / "benchmarks" / "camvid_pretrained_answer.py"
    )
    answer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(answer)
    return answer


def test_a_yes_must_hold_for_the_number_of_rows_compared(root, monkeypatch):
    """The verdict turns to "Yes" only for a row whose Bonferroni-corrected interval is above
    zero, names the row with its task set, and the sentence after it starts a new sentence."""
    answer = load_answer_script(root)
    base = [0.480, 0.490, 0.485, 0.495, 0.475]
    rows = {
        answer.HEADLINE: ("sum", [0.0] * 5),
        answer.BOUNDARY_ONLY: ("sum (without labels)", [0.0] * 5),
        # clearly ahead: +1.69 to +2.31 points even at 98.75%
        "without_labels__combiner=pcgrad": ("pcgrad (without labels)", [2.0, 2.1, 1.9, 2.2, 1.8]),
        # ahead at 95% (+0.07 to +1.13) but not once four rows are compared (-0.23 to +1.43)
        "all_tasks__combiner=uncertainty": ("uncertainty", [0.2, 1.2, 0.4, 0.9, 0.3]),
        "all_tasks__combiner=famo": ("famo", None),  # not finished
    }
    cells = {
        f"single_semseg__seed{s}": {"summary": {"test": {"semseg": {"miou": b}}}} for s, b in enumerate(base)
    }
    for row, (_, diffs) in rows.items():
        for s, (b, d) in enumerate(zip(base, diffs or [])):
            cells[f"{row}__seed{s}"] = {"summary": {"test": {"semseg": {"miou": b + d / 100}}}}
    planned = {answer.BASELINE: "single-task (semseg)", **{r: m for r, (m, _) in rows.items()}}
    monkeypatch.setattr(answer, "load_cells", lambda: cells)
    monkeypatch.setattr(answer, "planned_rows", lambda: (planned, [0, 1, 2, 3, 4], 30))
    monkeypatch.setattr(answer, "per_class", lambda seeds: ("Tree", -0.6, 2, 11))
    text = re.sub(r"\s+", " ", answer.paragraph())
    assert "help segmentation here? Yes, with `pcgrad (without labels)` (its 98.8% interval, 4 rows " in text
    assert "compared, is above zero):" in text
    assert "`uncertainty` 0.491 (+0.60 points [+0.07 to +1.13], ahead in 5 of 5)" in text  # its 95% interval
    assert (
        "Counted against the 4 finished rows (Bonferroni, 98.8% intervals), this difference is not "
        "significant: `uncertainty` -0.23 to +1.43." in text
    )
    assert "2 of 11 classes gain. Still to run: `famo` with all three tasks." in text
    assert "does not carry over" not in text


def test_an_architecture_row_ahead_is_said_to_change_the_network_too(root, monkeypatch):
    """A multi-task architecture row that beats segmentation alone also changed segmentation's
    own network: the answer says so with both parameter counts; hard sharing rows never get it."""
    answer = load_answer_script(root)
    base = [0.480, 0.490, 0.485, 0.495, 0.475]

    def cell(miou, semseg_params):
        return {"summary": {"test": {"semseg": {"miou": miou}}, "parameters": {"semseg": semseg_params}}}

    cells = {f"single_semseg__seed{s}": cell(b, 826_051) for s, b in enumerate(base)}
    rows = {
        answer.HEADLINE: ("sum", 0.0, 826_051),
        answer.BOUNDARY_ONLY: ("sum (without labels)", 0.0, 826_051),
        "all_tasks__model.architecture=mtan__combiner=sum": ("mtan + sum", 0.012, 1_054_843),
        "all_tasks__model.architecture=cross_stitch__combiner=sum": ("cross_stitch + sum", -0.01, 3_000_000),
    }
    for row, (_, gain, params) in rows.items():
        for s, b in enumerate(base):
            cells[f"{row}__seed{s}"] = cell(b + gain + 0.001 * s, params)
    planned = {answer.BASELINE: "single-task (semseg)", **{r: m for r, (m, *_) in rows.items()}}
    monkeypatch.setattr(answer, "load_cells", lambda: cells)
    monkeypatch.setattr(answer, "planned_rows", lambda: (planned, [0, 1, 2, 3, 4], 30))
    monkeypatch.setattr(answer, "per_class", lambda seeds: ("Tree", -0.6, 2, 11))
    text = re.sub(r"\s+", " ", answer.paragraph())
    assert (
        "`mtan + sum` changes the segmentation network as well as the tasks (segmentation's own "
        "parameters: 1.05M against 0.83M alone), so its gain is not the auxiliary tasks' alone." in text
    )  # no control row planned here
    # with its control planned but not run, the gain waits for it; once run, the pair is quoted
    control = answer.CONTROL + "model.architecture=mtan__combiner=sum"
    planned[control] = "mtan + sum (without boundary, labels)"
    text = re.sub(r"\s+", " ", answer.paragraph())
    assert "so its gain cannot be credited to the auxiliary tasks until its control, the same network" in text
    assert "still to run: `mtan + sum` on segmentation alone (the control)." in text
    # an architecture row without its control never makes a "yes" (1.2-1.6 points ahead of the
    # plain model, every seed): its gain may be the architecture's
    assert "Not measurably" in text
    for s, b in enumerate(base):
        cells[f"{control}__seed{s}"] = cell(b + 0.0078 + 0.002 * s, 1_054_843)
    text = re.sub(r"\s+", " ", answer.paragraph())
    assert (
        "Against `mtan` trained on segmentation alone (0.497, 5 seeds; the architecture alone: +1.18 points "
        "[+0.79 to +1.57], ahead in 5 of 5 over the plain single-task model), `mtan + sum` is +0.22 points "
        "[+0.02 to +0.42], ahead in 5 of 5; counted against the 4 finished rows (98.8%), -0.09 to +0.53: "
        "not significant." in text
    )  # control - plain: 0.78..1.58 points by seed; mtan - control: 0.42..0.02
    assert "cannot be credited" not in text and "Not measurably" in text  # +0.02 at 95%, not at 98.8%


def test_the_docs_status_block_lists_seeds_minutes_and_what_is_left(root, monkeypatch, tmp_path):
    """docs/benchmarks.md's "Where it stands" block is written from the cell files: per row its
    seeds (a partial row says how many), its minutes per cell, then the cells left; a docs file
    that lost the markers is refused with a message naming them."""
    answer = load_answer_script(root)

    def cell(seconds, load):
        return {"summary": {"seconds": seconds, "steps": 10}, "load": {"before": load}, "jobs": 2}

    cells = {f"single_semseg__seed{s}": cell(600 + 60 * s, 1.0) for s in range(3)}
    cells |= {f"all_tasks__combiner=sum__seed{s}": cell(900, 2.5) for s in range(3)}
    cells["without_labels__combiner=pcgrad__seed1"] = cell(1500, 0.4)
    planned = {
        "all_tasks__combiner=sum": "sum",
        "without_labels__combiner=pcgrad": "pcgrad (without labels)",
        "all_tasks__model.architecture=mtan__combiner=sum": "mtan + sum",
        "single_semseg": "single-task (semseg)",
    }
    monkeypatch.setattr(answer, "load_cells", lambda: cells)
    monkeypatch.setattr(answer, "planned_rows", lambda: (planned, [0, 1, 2], 12))
    block = answer.status_block()
    lines = block.splitlines()
    assert lines[0] == answer.STATUS_START and lines[-1] == answer.STATUS_END
    text = re.sub(r"\s+", " ", block)
    assert "**Where it stands.** 7 of the study's 12 cells are committed" in text
    assert "2 cell(s) at a time" in text and "1-minute load 0.4-2.5 at the cells' start" in text
    assert "- with all three tasks: `sum` 3 seeds (15.0 min per cell)." in text
    assert "`pcgrad` 1 of 3 seeds (25.0 min per cell)" in text
    assert "- single-task models: `single-task (semseg)` 3 seeds (10.0-12.0 min per cell)." in text
    assert (
        "Left, 5 cells: with all three tasks: `mtan + sum` (3 cells); without the image-level task "
        "(boundary alone): `pcgrad` (2 cells)." in text
    )
    # one cell left is "1 cell", not "1 cells"
    cells |= {f"all_tasks__model.architecture=mtan__combiner=sum__seed{s}": cell(900, 1.0) for s in range(3)}
    cells |= {f"without_labels__combiner=pcgrad__seed{s}": cell(1500, 1.0) for s in (0,)}
    text_one = re.sub(r"\s+", " ", answer.status_block())
    assert "Left, 1 cell: without the image-level task (boundary alone): `pcgrad` (1 cell)." in text_one
    # the last cell in: the block says so and lists nothing left
    cells["without_labels__combiner=pcgrad__seed2"] = cell(1500, 1.0)
    text_all = re.sub(r"\s+", " ", answer.status_block())
    assert "**Where it stands.** All 12 cells of the study are committed" in text_all
    assert (
        text_all.endswith("Every cell of the study is committed. " + answer.STATUS_END)
        and "Left" not in text_all
    )
    # the block replaces what stood between the markers, and nothing else
    docs = f"before\n{answer.STATUS_START}\nold\n{answer.STATUS_END}\nafter\n"
    assert answer.replace_block(docs, answer.STATUS_START, answer.STATUS_END, block, tmp_path / "x") == (
        f"before\n{block}\nafter\n"
    )
    monkeypatch.setattr(answer, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="lacks the markers .*put them back"):
        answer.replace_block(
            "no markers", answer.STATUS_START, answer.STATUS_END, block, tmp_path / "docs.md"
        )


def test_the_pretrained_answer_wraps_without_starting_a_list(root):
    """A wrapped line must not start with ``+ ``, ``- `` or ``* `` (Markdown would open a list in
    the middle of the paragraph and cut the code span ``mtan + sum`` in two)."""
    answer = load_answer_script(root)
    text = "still to run: `pcgrad`, `famo(update=same_batch)`, `mtan + sum`, `cross_stitch + sum` " * 4
    for width in range(40, 101):
        lines = answer.wrap_markdown(text, width).splitlines()
        assert " ".join(lines) == text.strip()
        assert not any(re.match(r"[+*-] ", line) for line in lines), width
        assert all(line.count("`") % 2 == 0 for line in lines), width


def test_the_shapes_step_times_are_the_idle_measurement(root, readme):
    """The README's per-step times of the shapes architectures are the committed idle
    measurement (benchmarks/bench_step_cost.py --out; its --check re-measures)."""
    text = (root / "benchmarks" / "results" / "shapes_architectures_step_cost.md").read_text()
    cost = {}
    for line in text.splitlines():
        cols = [c.strip() for c in line.strip("|").split("|")]
        if len(cols) == 5 and re.fullmatch(r"\d[\d.]*", cols[1]):
            # padnet(channels=64) + sum -> padnet + sum; hps + pcgrad(wrt=params) -> hps + pcgrad
            cost[re.sub(r"\(.*?\)", "", cols[0])] = cols[1]
    load = re.search(r"1-min load average ([\d.]+) before", text).group(1)
    assert f"load {load} at the start" in readme
    for arch in ("hps", "mtan", "cross_stitch", "nddr", "padnet", "mti_net"):
        assert f"{arch} + sum {cost[arch + ' + sum']} s" in readme, arch
    moe = [float(cost[f"{a} + sum"]) for a in ("mmoe", "cgc", "ple", "dselect_k", "ltb")]
    assert f"the mixture-of-experts rows with `sum` {min(moe):.2f}-{max(moe):.2f} s" in readme
    archs = (
        "hps",
        "mtan",
        "cross_stitch",
        "nddr",
        "padnet",
        "mti_net",
        "mmoe",
        "cgc",
        "ple",
        "dselect_k",
        "ltb",
    )
    ratios = [float(cost[f"{a} + pcgrad"]) / float(cost[f"{a} + sum"]) for a in archs]
    assert f"`pcgrad` costs {min(ratios):.1f}-{max(ratios):.1f}x `sum`" in readme


def camvid_architecture_phrases(root) -> list[str]:
    """What the README's CamVid architecture paragraph states, recomputed from the committed
    cell files and table: the cell count, Δm per architecture over its complete rows (3 seeds),
    and the paired per-seed differences against the single-task models. The claims the
    paragraph makes in words (no segmentation change significant once the complete rows are
    counted, every row ahead on image labels in every seed) are asserted here, so a new row that
    breaks one fails this test."""
    cells_dir = root / "benchmarks" / "results" / "camvid_architectures" / "cells"
    files = sorted(cells_dir.glob("*.json"))
    rows: dict[str, str] = {}  # method -> row id (cell id without its seed)
    for f in files:
        cell = json.loads(f.read_text())["cell"]
        if not cell["id"].startswith("single_"):
            rows[cell["method"]] = cell["id"].rsplit("__seed", 1)[0]
    t = table(root, "camvid_architectures")
    complete = {m: r for m, r in rows.items() if t[m]["seeds"] == 3}
    assert complete, "no architecture row has its 3 seeds: the README paragraph has nothing to quote"

    def arch(method: str) -> str:
        return method.split(" + ")[0].split("(")[0]

    def pct(values: list[float]) -> str:
        lo, hi = signed(min(values)), signed(max(values))
        return f"{lo}%" if lo == hi else f"{lo}% to {hi}%"

    by_arch: dict[str, list[float]] = {}
    for m in complete:
        by_arch.setdefault(arch(m), []).append(t[m]["delta_m_mean"])
    if len(files) == 63 and len(complete) == len(rows):
        phrases = ["All 63 cells are committed", "every row has its 3 seeds"]
    else:
        phrases = [f"{len(files)} of its 63 cells are committed", f"{len(complete)} rows have all 3 seeds"]
    phrases.append(
        "Δm against the three single-task models: " + ", ".join(f"`{a}` {pct(v)}" for a, v in by_arch.items())
    )
    seg, strict = {}, {}
    level = 1 - 0.05 / len(complete)  # Bonferroni: one interval per complete row
    for m, r in complete.items():
        _, st, diffs = cell_pairs(root, r, "camvid_architectures", seeds=3)
        seg[m], strict[m] = t_interval(diffs), t_interval(diffs, level)
    assert all(lo < 0 < hi for _, lo, hi in strict.values()), (
        "a row's segmentation change is significant counted against every complete row: rewrite the README"
    )
    ahead = [m for m in seg if seg[m][1] > 0 or seg[m][2] < 0]
    if ahead:
        phrases.append(
            " and ".join(
                f"`{m}` {seg[m][0]:+.2f} points [95% interval {seg[m][1]:+.2f} to {seg[m][2]:+.2f}]"
                for m in ahead
            )
        )
        phrases.append(
            f"counted against the {len(complete)} complete rows (Bonferroni, {100 * level:.1f}% intervals), "
            + " and ".join(f"{strict[m][1]:+.2f} to {strict[m][2]:+.2f}" for m in ahead)
            + (" respectively" if len(ahead) > 1 else "")
        )
    else:
        phrases.append("every row's mIoU difference has a 95% interval across zero")
    best = max(seg, key=lambda m: seg[m][0])
    mean, lo, hi = seg[best]
    phrases.append(f"the largest mean change, `{best}`, {mean:+.2f} points [{lo:+.2f} to {hi:+.2f}]")
    phrases.append(f"single-task segmentation's three seeds span {min(st):.3f}-{max(st):.3f} in mIoU")
    labels, loose = {}, {}  # loose: rows whose 95% interval on the labels gain reaches zero
    for m, r in complete.items():
        _, _, diffs = cell_pairs(root, r, "camvid_architectures", "labels", "map", seeds=3)
        assert all(d > 0 for d in diffs), f"{m}: the README says every row gains labels mAP in every seed"
        labels[m] = statistics.fmean(diffs)
        _, lo, hi = t_interval(diffs)
        if lo <= 0:
            loose[m] = (lo, hi)
    lo_gain, hi_gain = min(labels.values()), max(labels.values())
    gain = f"image-label task (mAP {lo_gain:+.1f} to {hi_gain:+.1f} points, ahead in every seed"
    if loose:
        gain += "; every 95% interval above zero but " + ", ".join(
            f"`{m}`'s, {lo:+.3f} to {hi:+.3f}" for m, (lo, hi) in loose.items()
        )
    else:
        gain += ", every interval above zero"
    phrases.append(gain + ")")
    boundary = [
        statistics.fmean(cell_pairs(root, r, "camvid_architectures", "boundary", "boundary_f1", seeds=3)[2])
        for r in complete.values()
    ]
    phrases.append(f"boundary F1 moves by {min(boundary):+.1f} to {max(boundary):+.1f} points")
    lead = max(by_arch, key=lambda a: max(by_arch[a]))
    total = {arch(m): t[m]["parameters_total"] / 1e6 for m in complete}
    phrases.append(
        f"`{lead}` leads, with {total[lead]:.1f}M parameters in all (hard sharing: {total['hps']:.1f}M)"
    )
    minutes = [t[m]["cell_seconds_mean"] / 60 for m in complete]
    phrases.append(f"{min(minutes):.1f}-{max(minutes):.1f} min per cell")
    return phrases


def test_the_camvid_architecture_paragraph_quotes_its_cells(root, readme):
    for phrase in camvid_architecture_phrases(root):
        assert phrase in readme, phrase


def test_the_architecture_cost_in_the_docs_is_the_committed_one(root):
    """docs/benchmarks.md compares the committed `hps` + `sum` cells with the fp32 cell and prices
    the whole table from the step-cost table above it: both recomputed here."""
    docs = re.sub(r"\s+", " ", (root / "docs" / "benchmarks.md").read_text())
    t = table(root, "camvid_architectures")
    minutes = t["hps + sum"]["cell_seconds_mean"] / 60
    assert t["hps + sum"]["seeds"] == 3
    fp32 = [
        int(x) for x in re.search(r"`hps` \+ `sum` took (\d+)-(\d+) s and the whole table", docs).groups()
    ]
    assert (
        f"`hps` + `sum` took {minutes:.1f} min per cell (the table's `min / cell`, two cells at a time on the 2 "
        f"cores, one thread each) against {fp32[0]}-{fp32[1]} s in fp32, "
        f"{fp32[0] / 60 / minutes:.1f}-{fp32[1] / 60 / minutes:.1f}x less" in docs
    )
    rows = re.findall(
        r"^\| [^|]+ \| [\d.]+ \| ([\d.]+) \| (\d+) \| [\d.]+ \| [\d.]+ \|$",
        (root / "docs" / "benchmarks.md").read_text(),
        re.M,
    )
    assert len(rows) == 21, rows  # 18 architecture rows + 3 single-task rows of the step-cost table
    core_hours = sum(float(x) * int(n) for x, n in rows) * minutes / 60
    assert f"needs about {core_hours:.0f} core-hours" in docs
    # what the committed cells took, measured: each row's mean cell time times its seeds
    done = {m: r for m, r in t.items() if r["seeds"]}
    cells = int(sum(r["seeds"] for r in done.values()))
    spent = sum(r["cell_seconds_mean"] * r["seeds"] for r in done.values()) / 3600
    who = "All 63 cells" if cells == 63 else f"The {cells} cells committed so far"
    assert f"{who} took {spent:.1f} core-hours" in docs
