"""``mtlzoo export``: a trained run's model as one ONNX or ``torch.export`` (``.pt2``) file.

::

    mtlzoo export RUN --format onnx|pt2 [--out FILE] [--checkpoint best|last] [--opset N] [--atol 1e-4]

The exported graph is the whole model: its input normalisation first (raw RGB in [0, 1] goes
in, as for :func:`mtlzoo.load`), then the backbone and every head. Its input ``image`` is
``float32 [batch, 3, H, W]`` with a dynamic batch size and any ``H``, ``W`` from the smallest
side it prints: the graph pads the image (bottom/right, zeros) to multiples of the backbone's
``size_divisor`` and crops every dense output back to ``H x W``, as
:class:`~mtlzoo.runtime.predictor.Predictor` does, so the file gives what
``mtlzoo.load(run).predict`` gives at every size. The outputs are named by task, in the spec's
order (ONNX: one output per task; ``.pt2``: the model's ``{task: tensor}``), raw head outputs
(logits), as ``Predictor.predict`` returns them.

After writing the file the command loads it back (onnxruntime for ONNX, ``torch.export.load``
for ``.pt2``), runs it on random images of three sizes and batch sizes (one on the divisor's
grid, two off it), and prints the largest absolute difference from ``Predictor.predict`` per
task; above ``--atol`` it fails in one line. The export runs on the CPU. ONNX needs the
``export`` extra: ``pip install 'mtlzoo[export]'`` (onnx, onnxscript, onnxruntime). ``FILE``
defaults to ``RUN/model-<checkpoint>.onnx`` / ``.pt2``.

Load the exported files with::

    session = onnxruntime.InferenceSession("runs/quickstart/model-best.onnx")
    semseg_logits = session.run(["semseg"], {"image": images})[0]      # images: float32 [B,3,H,W]
    program = torch.export.load("runs/quickstart/model-best.pt2")
    preds = program.module()(images)                                  # {task: tensor}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..contract.errors import ConfigError, MtlzooError, one_line

DEFAULT_ATOL = 1e-4
#: the export's example images have this many pixels a side at least (rounded up to the divisor)
EXAMPLE_SIDE = 32


def _largest_stride(model: Any) -> int:
    """The coarsest stride of the model's backbone (32 when it does not say)."""
    info = getattr(getattr(model, "backbone", None), "feature_info", None) or []
    return max((int(s) for _, s in info), default=32)


def shapes(model: Any, divisor: int) -> tuple[dict[int, Any], int, int]:
    """``(dynamic shapes of the image, smallest side, example side)``: batch, H and W dynamic.

    The exported graph pads H and W to multiples of ``divisor`` itself (:class:`AnySize`), so any
    side from the smallest one works: the padded side must be at least twice the largest stride
    (so the coarsest map is never 1 x 1, which export would specialise). The example image is
    off the divisor's grid, so that the traced graph pads."""
    from torch.export import Dim

    d = max(1, int(divisor))
    units = -(-2 * _largest_stride(model) // d)
    smallest = (units - 1) * d + 1 if d > 1 else units
    batch = Dim("batch", min=1)
    height, width = Dim("height", min=smallest), Dim("width", min=smallest)
    side = max(units, -(-EXAMPLE_SIDE // d)) * d - (1 if d > 1 else 0)
    return {0: batch, 2: height, 3: width}, smallest, side


def task_tuple(model: Any, names: list[str]) -> Any:
    """``model`` with the tuple of its tasks' predictions (in ``names`` order) as output, for
    ONNX, whose outputs are positional."""
    import torch

    class TaskTuple(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.model(image)
            return tuple(out[n] for n in names)

    return TaskTuple().eval()


def export_pt2(model: Any, example: Any, dynamic: dict[int, Any], out: Path) -> Any:
    """``torch.export`` the model (dict of task outputs) into ``out``; returns a callable that
    runs the saved file and gives ``{task: tensor}``."""
    import torch
    from torch.export import Dim

    try:
        program = torch.export.export(model, (example,), dynamic_shapes=(dynamic,))
    except Exception as exc:  # noqa: BLE001 - torch raises UserError/ConstraintViolationError
        if "Constraints violated" not in str(exc):
            raise
        # The size arithmetic of some models (a ViT's pyramid: ceil-mode pooling and resizes
        # between patch-14 and power-of-two grids) is beyond the solver's proofs for a named
        # range; Dim.AUTO lets export keep H and W symbolic and record what it could not prove
        # as runtime checks. The caller still compares the file with eager predict at three sizes.
        auto = dict.fromkeys(dynamic, Dim.AUTO)
        # the solver logs each inequality it gives up on (hundreds of lines of a traceback): the
        # verification below is what says whether the file is right
        shapes_log = logging.getLogger("torch.fx.experimental.symbolic_shapes")
        level = shapes_log.level
        shapes_log.setLevel(logging.ERROR)
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=(auto,))
        finally:
            shapes_log.setLevel(level)
    torch.export.save(program, str(out))
    return torch.export.load(str(out)).module()


def export_onnx(
    model: Any, names: list[str], example: Any, dynamic: dict[int, Any], out: Path, opset: int | None
) -> Any:
    """``torch.onnx.export`` (the dynamo exporter) into ``out``: input ``image``, one output per
    task; returns a callable that runs the saved file in onnxruntime and gives ``{task: tensor}``."""
    import torch

    try:
        import onnx  # noqa: F401 - the exporter needs it
        import onnxruntime as ort
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"export --format onnx needs onnx, onnxscript and onnxruntime ({one_line(exc)}); "
            f"pip install 'mtlzoo[export]'"
        ) from None
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    torch.onnx.export(
        task_tuple(model, names),
        (example,),
        str(out),
        dynamo=True,
        dynamic_shapes=(dynamic,),
        input_names=["image"],
        output_names=names,
        opset_version=opset,
        external_data=size > 1.5 * 2**30,  # protobuf files stop at 2 GiB
        verbose=False,
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])

    def run(x: Any) -> dict[str, Any]:
        outputs = session.run(names, {"image": x.numpy()})
        return {n: torch.from_numpy(o) for n, o in zip(names, outputs)}

    return run


def export(args: Any) -> dict[str, Any]:
    """Export, reload and verify (see the module docstring); returns what it found:
    ``{"file", "format", "opset", "inputs": [shapes], "max_abs_diff": {task: float},
    "min_side", "divisor"}``."""
    import torch

    from .predict import load_run

    _, predictor = load_run(args, "cpu")
    model = predictor.any_size()  # pads to the divisor and crops back inside the graph
    names = list(predictor.tasks)
    divisor = predictor.size_divisor
    checkpoint = args.checkpoint if args.checkpoint in ("best", "last") else Path(args.checkpoint).name
    out = Path(args.out) if args.out else Path(args.run) / f"model-{checkpoint}.{args.format}"
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamic, min_side, side = shapes(predictor.model, divisor)
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, side, side, generator=gen)
    try:
        if args.format == "pt2":
            runner = export_pt2(model, example, dynamic, out)
        else:
            runner = export_onnx(model, names, example, dynamic, out, args.opset)
    except MtlzooError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporters raise many kinds; say it in one line
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        hint = ""
        if "specialized" in text or "Constraints violated" in text:
            hint = (
                "; the model's code fixes the image or batch size (int() of a tensor size, a branch on "
                "it), so it cannot take any size: TORCH_LOGS=+dynamic shows where"
            )
        raise MtlzooError(
            f"export --format {args.format} of {args.run} failed: {type(exc).__name__}: {first}{hint}"
        ) from exc
    opset = None
    if args.format == "onnx":
        import onnx

        proto = onnx.load(str(out), load_external_data=False)
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    on_grid = -(-side // divisor) * divisor
    inputs = [(1, 3, on_grid, 2 * on_grid), (3, 3, 2 * side + 3, side), (2, 3, min_side, min_side + 5)]
    diffs = dict.fromkeys(names, 0.0)
    for shape in inputs:
        x = torch.rand(*shape, generator=gen)
        with torch.no_grad():
            got = runner(x)
        want = predictor.predict(x, batch_size=len(x))
        for n in names:
            eager = torch.stack([p[n] for p in want])
            if tuple(got[n].shape) != tuple(eager.shape):
                raise MtlzooError(
                    f"export: {n} of {out} has shape {list(got[n].shape)} for an input of {list(shape)}, "
                    f"predict gives {list(eager.shape)}; do not use this file"
                )
            diffs[n] = max(diffs[n], float((got[n].float() - eager).abs().max()))
    return {
        "file": out,
        "format": args.format,
        "opset": opset,
        "inputs": inputs,
        "max_abs_diff": diffs,
        "min_side": min_side,
        "divisor": divisor,
    }


def cmd_export(args: Any) -> int:
    """``mtlzoo export``: write the file, verify it against the eager model, print the differences."""
    result = export(args)
    out = result["file"]
    sizes = ", ".join("x".join(str(s) for s in shape) for shape in result["inputs"])
    print(
        f"exported {out} ({out.stat().st_size / 2**20:.1f} MiB"
        + (f", opset {result['opset']}" if result["opset"] else "")
        + f"): input 'image' float32 [batch, 3, H, W], any H and W from {result['min_side']} "
        f"(padded to multiples of {result['divisor']} inside, dense outputs cropped back); "
        f"outputs {', '.join(result['max_abs_diff'])}"
    )
    print(f"verified against predict on {sizes}; max |difference| per task:")
    width = max(len(n) for n in result["max_abs_diff"])
    for name, diff in result["max_abs_diff"].items():
        print(f"  {name.ljust(width)}  {diff:.3g}")
    worst = max(result["max_abs_diff"], key=result["max_abs_diff"].get)
    if result["max_abs_diff"][worst] > args.atol:
        raise MtlzooError(
            f"export: {worst} of {out} differs from predict by {result['max_abs_diff'][worst]:.3g} "
            f"(more than --atol {args.atol:g}); do not use this file"
        )
    return 0


def add_export_command(sub: Any, common: Any) -> None:
    """Add ``mtlzoo export`` to the CLI."""
    p = sub.add_parser(
        "export",
        parents=[common],
        help="export a trained run's model to ONNX or torch.export (.pt2), verified",
        description="Export a run's model (normalisation included; dynamic batch; any image size, padded "
        "to the backbone's size divisor and cropped back inside the graph; outputs named by task), then "
        "check the file against `predict` on random images of three sizes.",
    )
    p.add_argument("run", help="run folder (written by `mtlzoo train`)")
    p.add_argument("--format", choices=["onnx", "pt2"], required=True, help="onnx or pt2 (torch.export)")
    p.add_argument("--out", help="output file (default: RUN/model-<checkpoint>.<format>)")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint folder")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help=f"largest accepted difference (default {DEFAULT_ATOL:g})",
    )
    p.set_defaults(func=cmd_export)


__all__ = ["add_export_command", "cmd_export", "export", "shapes"]
