"""Speed and memory of the exact certification solver (lgip/probes/certify.py).

Solves --images x --edits x --classes (default 40,000 x 35 x 80, the COCO-sized run of
issue 12) on random unit vectors of dimension --dim (seeded), for each transform: once with
the budget 0 alone and once with the script's default budgets (0, 0.01, 0.02, 0.05) in one
call. For each it prints wall seconds, CPU seconds, the intervals found, and the peak of
memory allocated by numpy during the call (tracemalloc sees numpy's buffers) beside the
process's peak resident memory so far. Target: each solve under a minute on a 2-core machine.

    python bench/bench_certify.py
    python bench/bench_certify.py --images 5000 --transforms rotate
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lgip.cli import nonnegative_int, positive_int  # noqa: E402
from lgip.probes.certify import TRANSFORMS, certify, unit_rows  # noqa: E402

IMAGES, EDITS, CLASSES, DIM, SEED = 40_000, 35, 80, 512, 0
SCRIPT_BUDGETS = (0.0, 0.01, 0.02, 0.05)
TARGET_SECONDS = 60.0


def random_problem(n_images, n_edits, n_classes, dim, seed):
    """Random unit vectors, float32 as a model returns them."""
    rng = np.random.default_rng(seed)
    images = unit_rows(rng.standard_normal((n_images, dim), dtype=np.float32)).astype(np.float32)
    classes = unit_rows(rng.standard_normal((n_classes, dim), dtype=np.float32)).astype(np.float32)
    targets = unit_rows(rng.standard_normal((n_edits, n_classes, dim), dtype=np.float32)).astype(np.float32)
    return images, classes, targets


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "?"
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=positive_int, default=IMAGES)
    parser.add_argument("--edits", type=positive_int, default=EDITS)
    parser.add_argument("--classes", type=positive_int, default=CLASSES)
    parser.add_argument("--dim", type=positive_int, default=DIM)
    parser.add_argument("--seed", type=nonnegative_int, default=SEED)
    parser.add_argument("--transforms", nargs="+", default=list(TRANSFORMS), choices=TRANSFORMS)
    args = parser.parse_args()

    images, classes, targets = random_problem(args.images, args.edits, args.classes, args.dim, args.seed)
    print(f"commit {commit()}, numpy {np.__version__}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{args.images} images x {args.edits} edits x {args.classes} classes, D={args.dim}, seed {args.seed}; "
          f"inputs {(images.nbytes + targets.nbytes) / 2**20:.0f} MiB")
    print(f"{'transform':<9} {'budgets':<22} {'wall s':>7} {'cpu s':>7} {'intervals':>10} "
          f"{'numpy peak MiB':>15} {'process peak MiB':>17}  target")
    for transform in args.transforms:
        for budgets in ((0.0,), SCRIPT_BUDGETS):
            tracemalloc.start()
            wall, cpu = time.perf_counter(), time.process_time()
            results = certify(images, classes, targets, transform=transform, budgets=budgets)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            _, numpy_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            found = sum(int(r.n_intervals.sum()) for r in results)
            verdict = "met" if wall < TARGET_SECONDS else "MISSED"
            shown = ",".join(f"{b:g}" for b in budgets)
            print(f"{transform:<9} {shown:<22} {wall:7.1f} {cpu:7.1f} {found:10d} "
                  f"{numpy_peak / 2**20:15.0f} {process_peak:17.0f}  {verdict} (<{TARGET_SECONDS:.0f} s)")
            del results


if __name__ == "__main__":
    main()
