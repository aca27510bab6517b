"""Loading a trained run for inference: ``mtlzoo.load(run_dir)``, without the training data.

A run folder holds the validated spec (``config.yaml``), what the model was built for
(``model.json``: the dataset's info with class names and palettes, the input normalisation,
the backbone's size divisor, the tasks) and the weights (``checkpoints/best`` and
``checkpoints/last``). Loading builds the architecture from the spec and ``model.json`` —
never the dataset — and loads the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..contract.errors import CheckpointError
from ..runtime.checkpoint import check_finite, load_weights, resolve_checkpoint
from ..runtime.predictor import CARD, PredictedTask, Predictor, info_from_card
from .build import build_model, resolve_targets
from .zoo import Zoo


def load(
    run_dir: str | Path, checkpoint: str = "best", *, zoo: Zoo | None = None, device: str = "cpu"
) -> Predictor:
    """A :class:`~mtlzoo.runtime.predictor.Predictor` of a trained run.

    Args:
        run_dir: the run folder ``mtlzoo train`` wrote.
        checkpoint: ``best`` (chosen on the validation split), ``last``, or a checkpoint folder.
        zoo: the plugins to build with (default: the ones the run's spec asks for).
        device: where the model runs.
    """
    run = Path(run_dir)
    if not (run / "config.yaml").is_file() or not (run / CARD).is_file():
        raise CheckpointError(
            f"{run}: not a run folder with config.yaml and {CARD} (written by `mtlzoo train`)"
        )
    folder = resolve_checkpoint(
        run / "checkpoints" / checkpoint if checkpoint in ("best", "last") else checkpoint
    )
    if zoo is None:
        zoo, spec = Zoo.open(run / "config.yaml")
    else:
        spec = zoo.validate(run / "config.yaml")
    try:
        data = json.loads((run / CARD).read_text(encoding="utf-8"))
        info = info_from_card(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{run / CARD}: unreadable ({type(exc).__name__}: {exc}); the run folder is damaged"
        ) from None
    infos, _ = resolve_targets(zoo, spec, info)
    labels = {"backbone": spec.backbone.label}
    model, backbone, _ = build_model(zoo, spec, infos, info, labels)
    load_weights(folder, model)
    check_finite(model, str(folder))
    tasks = {n: PredictedTask(t, zoo.target_kind(t.kind)) for n, t in infos.items()}
    return Predictor(model, tasks, int(backbone.size_divisor), info, spec.cfg, device)


__all__ = ["load"]
