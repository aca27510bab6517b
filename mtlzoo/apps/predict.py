"""``mtlzoo predict``: a trained run's predictions on images, as files and pictures.

::

    mtlzoo predict RUN INPUTS... [--out DIR] [--checkpoint best|last] [--batch-size N]
                   [--device auto|cpu|cuda]
    mtlzoo predict RUN --split val|test [--limit N] ...

``INPUTS`` are image files, folders (the images directly inside them) and shell globs
(``'photos/**/*.jpg'``). ``--split`` predicts a split of the run's own dataset (built from its
``config.yaml``, so its data must be there) and draws the ground truth beside each prediction.
Images of any size are fine: the model pads them to its backbone's ``size_divisor`` and crops
the predictions back. The model runs in batches of ``--batch-size`` images on ``--device``
(``auto``: CUDA when there is one).

Output layout (``DIR``, by default ``RUN/predictions``)::

    DIR/
      predictions.json            index: the run, checkpoint, tasks, and for every input its folder and files
      <image>/                    one folder per image: its file name without extension (``-2``, ``-3`` ...
                                  when names repeat); ``val_0007`` for sample 7 of ``--split val``
        image.png                 the input, RGB
        <task>.png / .json ...    the task's own files, written by its target kind's ``save``
                                  (built-in kinds: :mod:`mtlzoo.builtin.targets`):
                                    segmentation  <task>.png          index PNG, mode P with the palette
                                    boundary      <task>.png          8-bit grey, probability * 255
                                    depth         <task>.png          16-bit grey, depth * 1000
                                                  <task>_color.png    magma (near bright), range in PNG text
                                    normals       <task>.png          RGB, (n + 1) / 2 * 255
                                    labels        <task>.json         {class: score}
                                    class         <task>.json         the 5 best classes with scores
                                  (a kind without ``save``: its picture as <task>.png)
        <task>_overlay.png        dense tasks: the task's picture blended 50/50 with the image
        <task>_gt.png             with --split, dense tasks: the picture of the ground truth
      sheets/batch_0000.png       one contact sheet per batch: a row per image; columns: the image, then
                                  each dense task's picture (with --split, its ground truth beside it),
                                  and a text column with the image's name and its image-level scores;
                                  a colour key of every segmentation task below
"""

from __future__ import annotations

import glob
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.errors import ConfigError, DataError

if TYPE_CHECKING:
    from ..zoo.zoo import Zoo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: a cell of a contact sheet fits in this many pixels (height, width)
CELL = (192, 288)
#: blend weight of a picture over its image in overlays
OVERLAY_ALPHA = 0.5
SCORES_SHOWN = 3


# -- loading -------------------------------------------------------------------------------------
def load_run(args: Any, device: str = "cpu") -> Any:
    """``(zoo, predictor)``: the plugins the spec of ``args.run`` asks for (their warnings on
    stderr) and the :class:`~mtlzoo.runtime.predictor.Predictor` of its ``args.checkpoint``."""
    from ..zoo.load import load
    from ..zoo.zoo import Zoo

    run = Path(args.run)
    zoo = None
    if (run / "config.yaml").is_file():
        zoo, _ = Zoo.for_spec(
            run / "config.yaml", strict=True if getattr(args, "strict_plugins", False) else None
        )
        for line in zoo.warnings:
            print(f"warning: {line}", file=sys.stderr)
    predictor = load(run, args.checkpoint, zoo=zoo, device=device)
    return zoo, predictor


def pick_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without one is refused."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu (or auto)")
    return requested


def image_files(inputs: Sequence[str]) -> list[Path]:
    """The image files ``inputs`` name (files, folders' images, globs), in order, each once."""
    out: list[Path] = []
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{p}: the folder has no images ({', '.join(IMAGE_SUFFIXES)})")
        elif p.is_file():
            found = [p]
        elif glob.has_magic(text):
            found = sorted(
                Path(f)
                for f in glob.glob(text, recursive=True)
                if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise DataError(f"{text}: no image matches the pattern")
        else:
            raise DataError(f"{text}: no such file or folder")
        out.extend(found)
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def folder_names(stems: Sequence[str]) -> list[str]:
    """One distinct folder name per image (``-2``, ``-3`` ... for repeats; never ``sheets``)."""
    used = {"sheets"}
    names = []
    for stem in stems:
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        names.append(name)
    return names


# -- pictures ------------------------------------------------------------------------------------
def as_rgb(image: Any) -> Any:
    """A ``[3,H,W]`` float image in [0, 1] as uint8 ``[H,W,3]``."""
    import numpy as np

    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def overlay(rgb: Any, picture: Any, alpha: float = OVERLAY_ALPHA) -> Any:
    """``picture`` blended over the image ``rgb`` (both uint8 ``[H,W,3]``)."""
    import numpy as np

    mixed = (1 - alpha) * rgb.astype(np.float32) + alpha * picture.astype(np.float32)
    return mixed.round().clip(0, 255).astype(np.uint8)


def _font(size: int = 13) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def score_lines(value: Any, info: Any) -> list[str]:
    """An image-level prediction as ``name score`` lines (the best few)."""
    flat = [float(v) for v in value.detach().float().reshape(-1).tolist()]
    names = list(info.class_names) + [str(i) for i in range(len(info.class_names), len(flat))]
    best = sorted(range(len(flat)), key=lambda i: -flat[i])[:SCORES_SHOWN]
    return [f"{names[i]} {flat[i]:.2f}" for i in best]


def truth_text(value: Any, info: Any) -> str:
    """An image-level target as class names (multi-hot: those set; an index: its class)."""
    names = list(info.class_names)

    def name(i: int) -> str:
        return names[i] if 0 <= i < len(names) else str(i)

    if value.dim() == 0:
        return name(int(value))
    hot = [i for i, v in enumerate(value.reshape(-1).tolist()) if float(v) > 0.5]
    return ", ".join(name(i) for i in hot) or "none"


def contact_sheet(
    rows: list[dict[str, Any]], titles: list[str], keys: list[tuple[str, list[tuple[str, Any]]]]
) -> Any:
    """A PIL image: a header of ``titles``, one row per entry of ``rows`` (``cells``: uint8
    pictures of one image in column order; ``text``: lines for the last column) and a colour
    key per segmentation task (``keys``: ``(task, [(class name, colour)])``)."""
    from PIL import Image, ImageDraw

    font, pad, text_w, head_h, line_h = _font(), 4, 230, 20, 16
    rows = [
        {**r, "text": [w for line in r["text"] for w in textwrap.wrap(line, 30, subsequent_indent="    ")]}
        for r in rows
    ]
    scaled = []
    for row in rows:
        h, w = row["cells"][0].shape[:2]
        s = min(CELL[0] / h, CELL[1] / w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        cells = []
        for i, cell in enumerate(row["cells"]):
            smooth = i == 0 and s < 1  # shrink the photo smoothly; class colours never mix
            resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
            cells.append(Image.fromarray(cell).resize(size, resample))
        scaled.append(cells)
    ncol = len(titles)
    col_w = [max(cells[c].width for cells in scaled) for c in range(ncol)]
    row_h = [max(max(c.height for c in cells), line_h * len(r["text"])) for cells, r in zip(scaled, rows)]
    key_lines = [(task, classes[i : i + 4]) for task, classes in keys for i in range(0, len(classes), 4)]
    width = sum(col_w) + text_w + pad * (ncol + 2)
    height = (
        head_h + sum(row_h) + pad * (len(rows) + 1) + (line_h + 2) * len(key_lines) + (pad if keys else 0)
    )
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    x = pad
    for c, title in enumerate([*titles, ""]):
        draw.text((x, 3), title, fill="black", font=font)
        x += (col_w[c] if c < ncol else 0) + pad
    y = head_h
    for cells, row, h in zip(scaled, rows, row_h):
        x = pad
        for c, cell in enumerate(cells):
            sheet.paste(cell, (x, y))
            x += col_w[c] + pad
        for i, line in enumerate(row["text"]):
            draw.text((x, y + i * line_h), line, fill="black", font=font)
        y += h + pad
    for i, (task, classes) in enumerate(key_lines):
        x = pad
        if i == 0 or key_lines[i - 1][0] != task:
            draw.text((x, y), f"{task}:", fill="black", font=font)
        x += 90
        for name, colour in classes:
            draw.rectangle([x, y + 2, x + 11, y + 13], fill=tuple(int(v) for v in colour), outline="black")
            draw.text((x + 16, y), name, fill="black", font=font)
            x += 150
        y += line_h + 2
    return sheet


def class_key(kind: Any, info: Any) -> list[tuple[str, Any]]:
    """``(class name, colour)`` of each class of a dense kind with classes, by its ``render``."""
    import torch

    if not info.class_names or kind.render is None:
        return []
    colours = kind.render(torch.arange(len(info.class_names)).view(1, -1), info)[0]
    return list(zip(info.class_names, colours))


# -- the command ---------------------------------------------------------------------------------
def _items(args: Any, zoo: Zoo, predictor: Any) -> tuple[list[dict[str, Any]], Any]:
    """What to predict: ``[{"name", "source"}]`` and, with ``--split``, the dataset."""
    if args.split:
        from ..zoo.build import base_dataset, build_pipeline_for

        if args.inputs:
            raise ConfigError("predict: give INPUTS or --split, not both")
        dataset = build_pipeline_for(
            zoo, predictor.cfg, args.split, base_dataset(zoo, predictor.cfg, args.split)
        )
        count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        digits = max(4, len(str(max(count - 1, 0))))
        return [
            {"name": f"{args.split}_{i:0{digits}d}", "source": f"{args.split}[{i}]", "index": i}
            for i in range(count)
        ], dataset
    if not args.inputs:
        raise ConfigError("predict: give images (files, folders or globs) or --split val|test")
    files = image_files(args.inputs)
    if args.limit is not None:
        files = files[: args.limit]
    names = folder_names([f.stem for f in files])
    return [{"name": n, "source": str(f), "path": f} for n, f in zip(names, files)], None


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def write_prediction(
    folder: Path, image: Any, decoded: dict[str, Any], predictor: Any, truth: dict[str, Any] | None
) -> tuple[list[Path], dict[str, Any]]:
    """Every file of one image (see the module docstring); returns the files and its
    contact-sheet row (``cells``, ``text``)."""
    from ..runtime.files import write_json

    folder.mkdir(parents=True, exist_ok=True)
    rgb = as_rgb(image)
    files = [_save_png(rgb, folder / "image.png")]
    cells, text = [rgb], [folder.name]
    for name, value in decoded.items():
        task = predictor.tasks[name]
        kind, info = task.kind, task.info.target_info
        files += [Path(p) for p in kind.save(value, info, folder / name)] if kind.save else []
        if kind.dense and kind.render is not None:
            picture = kind.render(value, info)
            if kind.save is None:
                files.append(_save_png(picture, folder / f"{name}.png"))
            files.append(_save_png(overlay(rgb, picture), folder / f"{name}_overlay.png"))
            cells.append(picture)
            if truth is not None:
                gt = kind.render(truth[name], info)
                files.append(_save_png(gt, folder / f"{name}_gt.png"))
                cells.append(gt)
        elif not kind.dense:
            if kind.save is None:
                files.append(write_json(folder / f"{name}.json", value.tolist()))
            text += [f"{name}:"] + [f"  {line}" for line in score_lines(value, info)]
            if truth is not None:
                text.append(f"  truth: {truth_text(truth[name], info)}")
    return files, {"cells": cells, "text": text}


def _save_png(array: Any, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def predict_to(args: Any) -> dict[str, Any]:
    """Run ``mtlzoo predict`` (see the module docstring); returns the index it wrote."""
    from tqdm import tqdm

    from ..runtime.files import write_json
    from ..runtime.predictor import read_image

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit: must be >= 1, got {args.limit}")
    device = pick_device(args.device)
    zoo, predictor = load_run(args, device)
    items, dataset = _items(args, zoo, predictor)
    out = Path(args.out) if args.out else Path(args.run) / "predictions"
    (out / "sheets").mkdir(parents=True, exist_ok=True)
    dense = [n for n, t in predictor.tasks.items() if t.kind.dense and t.kind.render is not None]
    titles = ["image"] + [t for n in dense for t in ([n, f"{n} (truth)"] if dataset is not None else [n])]
    keys = [(n, class_key(predictor.tasks[n].kind, predictor.tasks[n].info.target_info)) for n in dense]
    keys = [(n, k) for n, k in keys if k]
    index: dict[str, Any] = {
        "run": str(args.run),
        "checkpoint": str(args.checkpoint),
        "device": device,
        "tasks": {n: t.kind.name for n, t in predictor.tasks.items()},
        "images": [],
        "sheets": [],
    }
    with tqdm(total=len(items), desc="predict", unit="img", file=sys.stderr) as bar:
        for b, chunk in enumerate(_chunks(items, args.batch_size)):
            truths: list[dict[str, Any] | None]
            if dataset is not None:
                samples = [dataset[it["index"]] for it in chunk]
                images = [s["image"] for s in samples]
                truths = [{n: s[t.info.target] for n, t in predictor.tasks.items()} for s in samples]
            else:
                images = [read_image(it["path"]) for it in chunk]
                truths = [None] * len(chunk)
            raw = predictor.predict(images, batch_size=args.batch_size)
            rows = []
            for it, image, pred, truth in zip(chunk, images, raw, truths):
                folder = out / it["name"]
                files, row = write_prediction(folder, image, predictor.decode(pred), predictor, truth)
                rows.append(row)
                index["images"].append(
                    {
                        "input": it["source"],
                        "folder": it["name"],
                        "files": [str(f.relative_to(out)) for f in files],
                    }
                )
            sheet = out / "sheets" / f"batch_{b:04d}.png"
            contact_sheet(rows, titles, keys).save(sheet)
            index["sheets"].append(str(sheet.relative_to(out)))
            bar.update(len(chunk))
    write_json(out / "predictions.json", index)
    return index


def cmd_predict(args: Any) -> int:
    """``mtlzoo predict``: write every image's predictions, pictures and contact sheets."""
    index = predict_to(args)
    out = Path(args.out) if args.out else Path(args.run) / "predictions"
    print(
        f"wrote predictions of {len(index['images'])} image(s) x {len(index['tasks'])} task(s) to {out}/ "
        f"(contact sheets in {out / 'sheets'}/, index {out / 'predictions.json'})"
    )
    return 0


def add_predict_command(sub: Any, common: Any) -> None:
    """Add ``mtlzoo predict`` to the CLI."""
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="predict images with a trained run; write files, pictures and contact sheets",
        description="Predict image files, folders and globs (or a split of the run's dataset, with the "
        "ground truth beside) with a trained run: each task's files, pictures, overlays and one "
        "contact sheet per batch. Layout: see `python -m pydoc mtlzoo.apps.predict`.",
    )
    p.add_argument("run", help="run folder (written by `mtlzoo train`)")
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image files, folders, or globs such as 'photos/*.jpg'"
    )
    p.add_argument("--out", help="output folder (default: RUN/predictions)")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint folder")
    p.add_argument(
        "--split", choices=["train", "val", "test"], help="predict this split of the run's dataset"
    )
    p.add_argument("--limit", type=int, help="at most this many images")
    p.add_argument(
        "--batch-size", type=int, default=8, help="images per batch and per contact sheet (default 8)"
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: auto (CUDA if any)"
    )
    p.set_defaults(func=cmd_predict)


__all__ = [
    "add_predict_command",
    "cmd_predict",
    "predict_to",
    "load_run",
    "image_files",
    "contact_sheet",
    "score_lines",
]
