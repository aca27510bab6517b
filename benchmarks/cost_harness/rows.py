"""What to measure: the rows (combiners, modes, reference steps), their labels, the targets
they are read against, and the image size and batch defaults."""

from __future__ import annotations

from cost_harness.references import quadprog_installed

#: loss-level rows: (name, options); ``famo`` in both update modes
LOSS_LEVEL = [
    ("weighted", {}),
    ("uncertainty", {}),
    ("dwa", {}),
    ("rlw", {}),
    ("gls", {}),
    ("imtl_l", {}),
    ("famo", {"update": "next_batch"}),
    ("famo", {"update": "same_batch"}),
    ("gradnorm", {}),
    ("stch", {}),
]
GRADIENT_LEVEL = [
    "mgda",
    "pcgrad",
    "cagrad",
    "nash_mtl",
    "imtl_g",
    "aligned_mtl",
    "gradvac",
    "upgrad",
    "config",
    "dualproj",
    "fairgrad",
    "graddrop",
    "db_mtl",
    "excess_mtl",
    "moco",
    "modo",
    "sdmgrad",
]


#: torchjd autojac aggregators of the reference rows
TORCHJD = ("Mean", "UPGrad", "MGDA")
#: mtlzoo combiner -> the torchjd aggregator of the same method (others compare with UPGrad's row)
TORCHJD_SAME = {"mgda": "MGDA", "upgrad": "UPGrad"}
#: issue 20's GPU targets against the hand-written step: ``sum``'s time and memory
SUM_VS_HAND_TIME, SUM_VS_HAND_MEMORY = 1.03, 1.05
#: GPU-sized defaults of ``--device cuda`` (the harness of issue 20)
CUDA_BATCH, CUDA_SIZE = 32, "256x320"
CPU_BATCH, CPU_SIZE = 8, "64"


def parse_size(text: str) -> tuple[int, int]:
    """``"64"`` -> (64, 64); ``"256x320"`` -> (256, 320) (height x width)."""
    parts = str(text).lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise SystemExit(f"--size: {text!r} is not N or HxW (e.g. 64 or 256x320)") from None
    if len(sizes) not in (1, 2) or min(sizes) < 32:
        raise SystemExit(f"--size: {text!r} is not N or HxW with sides >= 32 (e.g. 64 or 256x320)")
    return (sizes[0], sizes[-1])


def configurations(
    only: set[str] | None, modes: set[str], references: bool, torchjd: tuple[str, ...] = TORCHJD
) -> list[tuple[str, dict]]:
    """The rows to measure: references (hand-written, torchjd's ``torchjd`` aggregators) first, then
    loss-level combiners and gradient-level ones in each ``wrt`` mode of ``modes``; ``only``
    filters combiner names."""
    confs: list[tuple[str, dict]] = []
    if references:
        confs += [("hand", {})] + [("torchjd", {"aggregator": a}) for a in torchjd]
    combiners = list(LOSS_LEVEL) + [
        (n, {"wrt": w}) for w in ("features", "params") if w in modes for n in GRADIENT_LEVEL
    ]
    return confs + [c for c in combiners if only is None or c[0] in only]


def label(name: str, options: dict) -> str:
    """The row's name: with its ``wrt`` or, for ``famo``, its ``update`` mode; references by what they are."""
    if name == "hand":
        return "hand-written sum step"
    if name == "torchjd":
        note = " (NNLS projector)" if options["aggregator"] == "UPGrad" and not quadprog_installed() else ""
        return f"torchjd autojac {options['aggregator']}{note}"
    mode = options.get("wrt", options.get("update"))
    return f"{name} ({mode})" if mode else name


def target(name: str, options: dict, level: str, tasks: int) -> float | None:
    """The time target (x ``sum``) of this row from the CPU issue (None where it sets none)."""
    if level == "reference" or name == "sum":
        return None
    if level == "loss" and "wrt" not in options:
        if name == "famo":
            return 1.2 if options.get("update") == "next_batch" else None
        return 1.05
    if options.get("wrt") == "features":
        return {3: 1.15, 8: 1.3}.get(tasks)
    if options.get("wrt") == "params":
        return {3: 2.0, 8: 3.7}.get(tasks)
    return None


def hand_target(
    name: str, options: dict, level: str, tasks: int, torchjd: dict[str, float]
) -> tuple[float, str] | None:
    """Issue 20's target of this row against the hand-written step, as ``(ratio, what)``:
    ``sum`` within 3% of it; a ``params``-mode gradient method at or below torchjd autojac's ratio
    (the torchjd row of the same method, else UPGrad's) at T=3 and T=8."""
    if name == "sum" and not options:
        return SUM_VS_HAND_TIME, ""
    if level == "gradient" and options.get("wrt") == "params" and tasks in (3, 8):
        ref = TORCHJD_SAME.get(name, "UPGrad")
        if ref in torchjd:
            return torchjd[ref], f" (torchjd {ref})"
    return None


__all__ = [
    "CPU_BATCH",
    "CPU_SIZE",
    "CUDA_BATCH",
    "CUDA_SIZE",
    "GRADIENT_LEVEL",
    "LOSS_LEVEL",
    "SUM_VS_HAND_MEMORY",
    "SUM_VS_HAND_TIME",
    "TORCHJD",
    "TORCHJD_SAME",
    "configurations",
    "hand_target",
    "label",
    "parse_size",
    "target",
]
