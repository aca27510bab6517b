"""Run `mtlzoo train SPEC` for every spec given, one after the other, in this one process.

    python tests/train_each.py RESULT.json SPEC...
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/train_each.py RESULT.json SPEC...

The distributed tests launch torchrun once for all their cases instead of once per case (each
launch costs three interpreter starts and the imports). Each spec goes through the command
line's own entry point. The process group is joined by the first run and left after the last:
a group cannot be created again from the same torchrun store once destroyed, so the
per-run ``cleanup`` is held back until the end. Rank 0 writes ``{spec: exit status or
traceback}`` to RESULT.json.
"""

from __future__ import annotations

import json
import sys
import traceback


def main(argv: list[str]) -> int:
    """Train each spec in turn; a failing spec is recorded and the next one still runs."""
    from mtlzoo.apps.cli import main as mtlzoo_main
    from mtlzoo.runtime import distributed

    leave_group, distributed.cleanup = distributed.cleanup, lambda: None
    result_path, specs = argv[0], argv[1:]
    results: dict[str, int | str] = {}
    for spec in specs:
        print(f"=== train {spec}", flush=True)
        try:
            results[spec] = mtlzoo_main(["train", spec])
        except Exception:  # recorded for the test of this spec; the others still run
            results[spec] = traceback.format_exc()
    if distributed.is_main():  # asked before leaving the group, while the rank is known
        with open(result_path, "w") as f:
            json.dump(results, f, indent=1)
    leave_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
