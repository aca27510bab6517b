"""The README's answer from the pretrained CamVid study, written from its committed cells.

The README's "CamVid with an ImageNet encoder" paragraph quotes the study's paired comparisons
(test mIoU, each multi-task row against single-task segmentation, seed by seed), its per-class
change and the time per cell; docs/benchmarks.md's "Where it stands" block lists, row by row,
the seeds committed, the minutes per cell and what is left. This script builds both from
``benchmarks/results/camvid_pretrained/cells/`` and the per-class csv, so they can be rewritten
each time cells are committed (run ``mtlzoo bench ... --report-only`` first for the csv):

    python benchmarks/camvid_pretrained_answer.py           # rewrite the README paragraph and docs block
    python benchmarks/camvid_pretrained_answer.py --check   # exit 1 when either is stale

A row enters the answer once all its seeds are committed. tests/test_readme_results.py
recomputes the quoted figures independently.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import textwrap
from pathlib import Path

from mtlzoo.apps.words import count as count_of
from mtlzoo.apps.words import span

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "benchmarks" / "specs" / "camvid_pretrained.yaml"
RESULTS = ROOT / "benchmarks" / "results"
CELLS = RESULTS / "camvid_pretrained" / "cells"
START = "**CamVid with an ImageNet encoder**"
BASELINE = "single_semseg"
HEADLINE = "all_tasks__combiner=sum"
BOUNDARY_ONLY = "without_labels__combiner=sum"
# an architecture trained on segmentation alone: what the architecture gives without the tasks
CONTROL = "without_boundary_labels__"
DOCS = ROOT / "docs" / "benchmarks.md"
STATUS_START = (
    "<!-- where-it-stands: written by benchmarks/camvid_pretrained_answer.py from the cell files -->"
)
STATUS_END = "<!-- where-it-stands: end -->"
GROUPS = (
    ("all_tasks__", "with all three tasks"),
    ("without_labels__", "without the image-level task (boundary alone)"),
    (CONTROL, "segmentation alone on a multi-task architecture (the control of its rows)"),
    ("single_", "single-task models"),
)


def load_cells() -> dict[str, dict]:
    """Committed cell records by cell id."""
    return {json.loads(p.read_text())["cell"]["id"]: json.loads(p.read_text()) for p in CELLS.glob("*.json")}


def planned_rows() -> tuple[dict[str, str], list[int], int]:
    """``({row id: method label}, seeds, number of cells)`` from the spec's plan, in plan order."""
    from mtlzoo.apps.bench.run import load

    bench = load(SPEC)
    rows: dict[str, str] = {}
    for cell in bench.cells:
        rows.setdefault(cell.id.rsplit("__seed", 1)[0], cell.method)
    return rows, list(bench.spec.seeds), len(bench.cells)


def miou(record: dict) -> float:
    """The cell's test mIoU (checkpoint chosen on val)."""
    return record["summary"]["test"]["semseg"]["miou"]


def paired(
    cells: dict[str, dict], row: str, seeds: list[int], against: str = BASELINE
) -> tuple[float, list[float]]:
    """``(mean test mIoU of the row, per-seed differences to ``against`` (default segmentation
    alone) in points)``."""
    values = [miou(cells[f"{row}__seed{s}"]) for s in seeds]
    diffs = [100 * (miou(cells[f"{row}__seed{s}"]) - miou(cells[f"{against}__seed{s}"])) for s in seeds]
    return statistics.fmean(values), diffs


def control_of(row: str) -> str:
    """The control row of an architecture row: the same cell on segmentation alone."""
    return CONTROL + row.split("__", 1)[1]


def reference(row: str, complete: list[str]) -> str | None:
    """The row a multi-task row's gain is credited against: segmentation alone for hard sharing;
    for an architecture row, the same architecture on segmentation alone (:data:`CONTROL`),
    ``None`` while that control is not complete."""
    if "model.architecture=" not in row:
        return BASELINE
    return control_of(row) if control_of(row) in complete else None


def comparison(diffs: list[float], label: str = "") -> str:
    """``+0.13 points [95% interval -0.17 to +0.43], ahead in 4 of 5`` (``label`` shortens it)."""
    from mtlzoo.apps.bench.paired import t_interval

    mean, low, high = t_interval(diffs)
    ahead = sum(d > 0 for d in diffs)
    if label:
        return f"{mean:+.2f} points [{low:+.2f} to {high:+.2f}], ahead in {ahead} of {len(diffs)}"
    return (
        f"{mean:+.2f} points [95% interval {low:+.2f} to {high:+.2f}], "
        f"the multi-task model ahead in {ahead} of {len(diffs)}"
    )


def scratch_gain() -> float:
    """Points of test mIoU by which `sum` beat segmentation alone in the from-scratch CamVid
    table (``benchmarks/results/camvid.csv``), which the README quotes above this paragraph."""
    with open(RESULTS / "camvid.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    return 100 * (
        float(rows["sum"]["semseg.miou_mean"]) - float(rows["single-task (semseg)"]["semseg.miou_mean"])
    )


def short_name(method: str) -> str:
    """``mtan + sum (without labels)`` -> ``mtan + sum``."""
    return method.split(" (without")[0]


def per_class(seeds: int) -> tuple[str, float, int, int]:
    """``(class with the largest change, its change in points, classes that gain, classes)``
    for `sum` with all tasks against segmentation alone, from the bench's per-class csv (which
    must cover all ``seeds``: it is written by ``mtlzoo bench ... --report-only``)."""
    path = RESULTS / "camvid_pretrained_per_class.csv"
    with open(path) as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["method"] == "sum" and not r["setting"] and r["diff_vs_single_task"]
        ]
    if not rows or any(int(r["seeds"]) != seeds for r in rows):
        sys.exit(
            f"{path.relative_to(ROOT)} does not hold `sum` at {seeds} seeds: rewrite it with "
            f"`mtlzoo bench {SPEC.relative_to(ROOT)} --report-only`"
        )
    top = max(rows, key=lambda r: abs(float(r["diff_vs_single_task"])))
    gains = sum(float(r["diff_vs_single_task"]) > 0 for r in rows)
    return top["class"], 100 * float(top["diff_vs_single_task"]), gains, len(rows)


def paragraph() -> str:
    """The README paragraph, wrapped at 100 columns."""
    from mtlzoo.apps.bench.paired import LEVEL, t_interval
    from mtlzoo.apps.bench.report import cell_cost

    cells = load_cells()
    rows, seeds, total = planned_rows()
    complete = [r for r in rows if all(f"{r}__seed{s}" in cells for s in seeds)]
    for needed in (HEADLINE, BOUNDARY_ONLY, BASELINE):
        if needed not in complete:
            spec = SPEC.relative_to(ROOT)
            sys.exit(
                f"the answer needs every seed of {needed}: run `mtlzoo bench {spec} --cells '{needed}__*'`"
            )
    minutes = [cell_cost(r["summary"])["seconds"] / 60 for r in cells.values()]
    multi = [r for r in complete if not r.startswith(("single_", CONTROL))]
    # a "yes" must survive the number of rows compared: Bonferroni over the finished rows
    level = 1 - (1 - LEVEL) / len(multi)
    # the tasks' effect on an architecture row is measured against the same network on
    # segmentation alone: without that control its gain may be the architecture's
    fair = {r: reference(r, complete) for r in multi}
    above = [
        r
        for r in multi
        if fair[r] is not None and t_interval(paired(cells, r, seeds, against=fair[r])[1], level)[1] > 0
    ]
    baseline = statistics.fmean(miou(cells[f"{BASELINE}__seed{s}"]) for s in seeds)
    head_mean, head_diffs = paired(cells, HEADLINE, seeds)
    wl_mean, wl_diffs = paired(cells, BOUNDARY_ONLY, seeds)
    if above:
        verdict = (
            "Yes, with "
            + ", ".join(f"`{rows[r]}`" for r in above)
            + f" (its {100 * level:.1f}% interval, {len(multi)} rows compared, is above zero"
            + (
                " against the same network on segmentation alone"
                if any(fair[r] != BASELINE for r in above)
                else ""
            )
            + ")"
        )
    else:
        verdict = "Not measurably"
    text = (
        f"{START} ([table](benchmarks/results/camvid_pretrained.md), "
        f"`mtlzoo bench benchmarks/specs/camvid_pretrained.yaml`): EfficientNet-Lite0 with its packaged ImageNet "
        f"weights, the 180x240 images with 160x224 crops, 20 epochs (920 AdamW steps), test split with the "
        f"checkpoint chosen on val, compared seed by seed. "
        + (
            f"All {total} cells of the study are committed ({span(min(minutes), max(minutes), '.0f')} min each "
            f"on this 2-core CPU, one thread per cell; per row: "
            if len(cells) == total
            else f"The study runs in pieces: {len(cells)} of the study's {total} cells are committed so far "
            f"({span(min(minutes), max(minutes), '.0f')} min each on this 2-core CPU, one thread per cell; the rest: "
        )
        + "[docs/benchmarks.md](docs/benchmarks.md#the-pretrained-camvid-study)). "
        f"**Did the auxiliary tasks help segmentation here? {verdict}:** test mIoU {head_mean:.3f} with boundary "
        f"and the rare-class image labels (`sum`, {len(seeds)} seeds) against {baseline:.3f} for segmentation "
        f"alone ({len(seeds)} seeds); seed by seed {comparison(head_diffs)}; with boundary alone {wl_mean:.3f} "
        f"({len(seeds)} seeds; {comparison(wl_diffs, 'short')})."
    )
    others = [r for r in multi if r not in (HEADLINE, BOUNDARY_ONLY)]
    for group, title in (("all_tasks", "with all three tasks"), ("without_labels", "with boundary alone")):
        members = [r for r in others if r.startswith(group + "__")]
        if members:
            parts = []
            for r in members:
                mean, diffs = paired(cells, r, seeds)
                parts.append(f"`{short_name(rows[r])}` {mean:.3f} ({comparison(diffs, 'short')})")
            text += f" The other methods {title}, against segmentation alone: {'; '.join(parts)}."
    # a 95% interval that excludes zero only until the number of rows compared is counted
    loose = []
    for r in multi:
        diffs = paired(cells, r, seeds)[1]
        _, low, high = t_interval(diffs)
        _, c_low, c_high = t_interval(diffs, level)
        if (low > 0 or high < 0) and c_low <= 0 <= c_high:
            loose.append(f"`{rows[r]}` {c_low:+.2f} to {c_high:+.2f}")
    if loose:
        these = "this difference is" if len(loose) == 1 else "these differences are"
        text += (
            f" Counted against the {len(multi)} finished rows (Bonferroni, {100 * level:.1f}% intervals),"
            f" {these} not significant: {'; '.join(loose)}."
        )
    # an architecture row changes segmentation's own network too: its gain is not the tasks' alone
    quoted: set[str] = set()  # controls already described
    for r in multi:
        if "model.architecture=" not in r or paired(cells, r, seeds)[0] <= baseline:
            continue
        own = cells[f"{r}__seed{seeds[0]}"]["summary"].get("parameters", {}).get("semseg")
        alone = cells[f"{BASELINE}__seed{seeds[0]}"]["summary"].get("parameters", {}).get("semseg")
        control = control_of(r)
        if fair[r] == control:
            diffs = paired(cells, r, seeds, against=control)[1]
            if control in quoted:
                text += f" Against the same control, `{rows[r]}` is {comparison(diffs, 'short')}"
            else:
                # the control against the plain model: the architecture's own share of the gain
                c_mean, c_diffs = paired(cells, control, seeds)
                text += (
                    f" Against `{rows[r].split(' + ')[0]}` trained on segmentation alone ({c_mean:.3f}, "
                    f"{len(seeds)} seeds; the architecture alone: {comparison(c_diffs, 'short')} over the plain "
                    f"single-task model), `{rows[r]}` is {comparison(diffs, 'short')}"
                )
                quoted.add(control)
            _, low, high = t_interval(diffs)
            _, c_low, c_high = t_interval(diffs, level)
            if (low > 0 or high < 0) and c_low <= 0 <= c_high:
                text += (
                    f"; counted against the {len(multi)} finished rows ({100 * level:.1f}%), "
                    f"{c_low:+.2f} to {c_high:+.2f}: not significant"
                )
            text += "."
        elif own and alone and own != alone:
            text += (
                f" `{rows[r]}` changes the segmentation network as well as the tasks (segmentation's own "
                f"parameters: {own / 1e6:.2f}M against {alone / 1e6:.2f}M alone), so its gain "
                + (
                    "cannot be credited to the auxiliary tasks until its control, the same network on "
                    "segmentation alone, is run."
                    if control in rows
                    else "is not the auxiliary tasks' alone."
                )
            )
    big_class, big, gains, classes = per_class(len(seeds))
    text += (
        f" Per class (`sum` against segmentation alone), the largest change is {big_class} {big:+.1f} points "
        f"and {gains} of {classes} classes gain."
    )
    gain = scratch_gain()
    ended = True
    if not above and gain > 0:
        text += (
            f" The small gain of the from-scratch table above (`sum` {gain:+.1f} points) does not carry over"
            " to a pretrained encoder at this budget"
        )
        ended = False
    left = []
    for group, title in (
        ("all_tasks", "with all three tasks"),
        ("without_labels", "with boundary alone"),
        (CONTROL.rstrip("_"), "on segmentation alone (the control)"),
    ):
        names = [
            f"`{short_name(m)}`" for r, m in rows.items() if r.startswith(group + "__") and r not in complete
        ]
        if names:
            left.append(", ".join(names) + " " + title)
    if left:
        text += ("; still to run: " if not ended else " Still to run: ") + "; ".join(left) + "."
    elif not ended:
        text += "."
    return wrap_markdown(text)


def status_block() -> str:
    """docs/benchmarks.md's "Where it stands" block: per row, the seeds committed and the
    measured minutes per cell; then the rows (and cells) still to run."""
    from mtlzoo.apps.bench.report import cell_cost

    cells = load_cells()
    rows, seeds, total = planned_rows()
    loads = [r["load"]["before"] for r in cells.values() if (r.get("load") or {}).get("before") is not None]
    jobs = sorted({int(r.get("jobs", 1)) for r in cells.values()})
    lines = [
        STATUS_START,
        wrap_markdown(
            (
                f"**Where it stands.** All {total} cells of the study are committed "
                if len(cells) == total
                else f"**Where it stands.** {len(cells)} of the study's {total} cells are committed "
            )
            + f"(`{CELLS.relative_to(ROOT).as_posix()}/`; minutes per cell as the table computes them from the cell "
            f"files, one torch thread per cell, {'-'.join(map(str, jobs))} cell(s) at a time on the 2-core CPU"
            + (f", 1-minute load {span(min(loads), max(loads))} at the cells' start" if loads else "")
            + "; hosts differ between sessions, see the table's machine line):"
        ),
        "",
    ]
    left: list[str] = []
    for prefix, title in GROUPS:
        done, todo = [], []
        for row, method in rows.items():
            if not row.startswith(prefix):
                continue
            have = [cells[f"{row}__seed{s}"] for s in seeds if f"{row}__seed{s}" in cells]
            name = f"`{short_name(method)}`"
            if have:
                minutes = [cell_cost(r["summary"])["seconds"] / 60 for r in have]
                count = (
                    f"{len(have)} seeds" if len(have) == len(seeds) else f"{len(have)} of {len(seeds)} seeds"
                )
                done.append(f"{name} {count} ({span(min(minutes), max(minutes))} min per cell)")
            if len(have) < len(seeds):
                todo.append(f"{name} ({count_of(len(seeds) - len(have), 'cell')})")
        if done:
            lines.append(wrap_markdown(f"- {title}: " + "; ".join(done) + ".", 98).replace("\n", "\n  "))
        if todo:
            left.append(f"{title}: " + ", ".join(todo))
    lines.append("")
    if left:
        lines.append(wrap_markdown(f"Left, {count_of(total - len(cells), 'cell')}: " + "; ".join(left) + "."))
    else:
        lines.append("Every cell of the study is committed.")
    lines.append(STATUS_END)
    return "\n".join(lines)


def replace_block(text: str, start: str, end: str, new: str, path: Path) -> str:
    """``text`` with the part from ``start`` up to ``end`` (the marker lines included) replaced
    by ``new``; a file without both markers is an error naming them."""
    if start not in text or end not in text:
        sys.exit(
            f"{path.relative_to(ROOT)} lacks the markers {start!r} ... {end!r}: put them back around the block"
        )
    a = text.index(start)
    b = text.index(end, a) + len(end)
    return text[:a] + new + text[b:]


def wrap_markdown(text: str, width: int = 100) -> str:
    """``text`` wrapped at ``width`` without breaking a code span: a line that starts with
    ``+ sum`` would begin a Markdown list in the middle of the paragraph."""
    spans = text.split("`")
    # odd pieces are inside backticks: their spaces must not become line breaks
    glued = "`".join(p.replace(" ", "\0") if i % 2 else p for i, p in enumerate(spans))
    lines = textwrap.wrap(glued, width, break_on_hyphens=False, break_long_words=False)
    return "\n".join(line.replace("\0", " ") for line in lines)


def main(argv: list[str] | None = None) -> int:
    """Rewrite the README paragraph and the docs block, or with ``--check`` report whether
    either is stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the README or the docs block differs"
    )
    args = parser.parse_args(argv)
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    start = readme.index(START)
    end = readme.index("\n\n", start)
    new = paragraph()
    docs = DOCS.read_text()
    new_docs = replace_block(docs, STATUS_START, STATUS_END, status_block(), DOCS)
    if args.check:
        stale = 0
        if readme[start:end] != new:
            print("README.md's pretrained CamVid paragraph is stale; the cells say:\n\n" + new)
            stale = 1
        if new_docs != docs:
            print(
                f"{DOCS.relative_to(ROOT)}'s 'Where it stands' block is stale; the cells say:\n\n"
                + status_block()
            )
            stale = 1
        if not stale:
            print("README.md's pretrained CamVid paragraph and the docs block match the committed cells")
        return stale
    readme_path.write_text(readme[:start] + new + readme[end:])
    DOCS.write_text(new_docs)
    print(new + "\n\n" + status_block())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
