"""One configuration measured in a fresh process (:func:`worker`), and the parent's side that
starts it and collects its result or its error (:func:`run_one`)."""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from pathlib import Path

from cost_harness.model import combiner_zoo, light_heads, make_forward
from cost_harness.references import hand_step, torchjd_step
from cost_harness.rows import label, parse_size


def worker(args: argparse.Namespace) -> dict:
    """Measure one configuration (``args.name`` with ``args.options``) in this process."""
    import timm
    import torch
    import torch.nn.functional as F

    from mtlzoo.contract.combine import Step

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is available here; use --device cpu")
        device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cudnn.benchmark = True  # as the Trainer on CUDA (train.deterministic auto: off)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = parse_size(args.size)
    channels_last = cuda if args.channels_last is None else args.channels_last

    backbone = timm.create_model("resnet18", features_only=True, pretrained=False, zero_init_last=False)
    names = [f"t{i}" for i in range(args.tasks)]
    heads = light_heads(backbone.feature_info.channels(), names)
    backbone, heads = backbone.to(device), heads.to(device)
    if channels_last:
        backbone, heads = (
            backbone.to(memory_format=torch.channels_last),
            heads.to(memory_format=torch.channels_last),
        )
    zoo = combiner_zoo()
    baseline = zoo.make("combiner", {"name": "sum"}, names, path="combiner").to(device)
    combiner = None
    if args.name not in ("hand", "torchjd"):
        combiner = zoo.make(
            "combiner", {"name": args.name, **json.loads(args.options)}, names, path="combiner"
        )
        combiner = combiner.to(device)
    params = list(backbone.parameters()) + list(heads.parameters())
    if combiner is not None:
        params += [p for p in combiner.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, height, width, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    targets = {n: torch.randn(args.batch, 1, height, width, generator=g).to(device) for n in names}
    shared = list(backbone.parameters())
    own = {n: list(heads[n].parameters()) for n in names}

    forward = make_forward(backbone, heads, x, targets)

    def combiner_step(comb, k: int) -> None:
        feats, losses = forward()
        step = Step(losses, feats, shared, own, step=k, epoch=k // 4)
        comb.backward(losses, step)
        optimizer.step()
        if comb.needs_losses_after_step:
            with torch.no_grad():
                feats = backbone(x)
                comb.after_step({n: F.mse_loss(heads[n](feats, x.shape[-2:]), targets[n]) for n in names})
        optimizer.zero_grad(set_to_none=True)

    hand = hand_step(forward, optimizer)
    steps = {"sum": lambda k: combiner_step(baseline, k)}
    if args.name == "hand":
        steps["row"] = hand
    elif args.name == "torchjd":
        steps["row"] = torchjd_step(
            json.loads(args.options)["aggregator"], forward, optimizer, shared, own, names
        )
    else:
        steps["row"] = lambda k: combiner_step(combiner, k)
    if args.references and args.name != "hand":
        steps["hand"] = hand

    def timed(fn, k: int) -> float:
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn(k)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    order = ["row", "sum"] + (["hand"] if "hand" in steps else [])
    for k in range(args.warmup):
        for key in order[::-1]:
            steps[key](k)
    times: dict[str, list[float]] = {key: [] for key in order}
    for k in range(args.repeats):  # interleaved, every contender first as often as the others
        turn = (order[::-1] if k % 2 == 0 else order) if len(order) == 2 else order[k % 3 :] + order[: k % 3]
        for key in turn:
            times[key].append(timed(steps[key], args.warmup + k))
    after = args.warmup + args.repeats
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for k in range(2):
            steps["row"](after + k)
        torch.cuda.synchronize(device)
        peak_mb = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    else:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, large blocks are mmapped and unmapped on free
        libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        rss0 = _status_kb("VmRSS")
        for k in range(2):
            steps["row"](after + k)
        peak_mb = (_status_kb("VmHWM") - rss0) / 1024
    out = {
        "time_s": statistics.median(times["row"]),
        "sum_s": statistics.median(times["sum"]),
        "times": times["row"],
        "peak_mb": peak_mb,
        "level": "reference" if combiner is None else combiner.level,
        "shared_params": sum(p.numel() for p in shared),
        "channels_last": channels_last,
    }
    if "hand" in times:
        out["hand_s"] = statistics.median(times["hand"])
    if args.name == "hand":
        out["hand_s"] = out["time_s"]
    if cuda:
        out["gpu"] = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    return out


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _child(conn, args: argparse.Namespace) -> None:
    try:
        conn.send(worker(args))
    except BaseException as exc:  # report, do not hang the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def start_method() -> str:
    """``fork`` (the libraries are imported once) unless CUDA was started in this process: a
    forked child cannot use a CUDA context its parent made, so it is spawned then."""
    import torch

    return "spawn" if torch.cuda.is_initialized() else "fork"


def run_one(args: argparse.Namespace, name: str, tasks: int, options: dict) -> dict:
    """Measure one configuration in a fresh child process."""
    import multiprocessing as mp

    child_args = argparse.Namespace(
        **{**vars(args), "name": name, "tasks": tasks, "options": json.dumps(options)}
    )
    ctx = mp.get_context(start_method())
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, child_args))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:  # the child died without a word (killed, out of memory)
        proc.join()
        result = {"error": f"the measuring process died (exit code {proc.exitcode})"}
    proc.join()
    if "error" in result:  # reported in the table; the other rows are still measured
        print(
            f"T={tasks} {label(name, options)}: not measured: {result['error']}", file=sys.stderr, flush=True
        )
    return result


__all__ = [
    "run_one",
    "start_method",
    "worker",
]
