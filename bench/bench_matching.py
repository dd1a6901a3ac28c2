"""Batched embedding matching against one pair at a time, side by side in one run.

What it measures, on the tiny open_clip CLIP that lgip.tiny builds (loaded through
its `openclip:local-dir:` spec, as the script will load it), in the `normalized` box
with plain descent:

  1. batched     lgip.probes.matching.match_embeddings on `--pairs` (source, target)
                 pairs in one pool: one forward/backward per step for all of them.
  2. one by one  the same function on the same pairs, one call per pair, as a loop over
                 pairs would run them.

Both take exactly `--steps` updates per pair (the stopping thresholds are set out of
reach), after one untimed warm-up call each; each timing is the best of `--repeats`,
the two interleaved. It prints milliseconds per pair for both, in wall time and in this
process's CPU time (on a machine shared with other jobs the CPU time is the steadier of
the two), their ratios, and the largest difference between the two results (the same
maths, so it should be float rounding).

Then memory: for each `--pair-batch-size` value a fresh Python process (so earlier
allocations do not hide the peak) matches `--memory-pairs` pairs with that pool size and
reports its resident memory before the call and its peak (ru_maxrss) during it (on CUDA:
allocated tensor memory); the growth follows the pool size, not the number of pairs.

`--image-size` / `--patch-size` time the same tiny configuration on another image grid
(built in memory, seeded); `--model SPEC` any open_clip model; `--device cuda` a GPU.

    python bench/bench_matching.py
    python bench/bench_matching.py --image-size 16
    python bench/bench_matching.py --pairs 64 --steps 20 --pair-batch-size 8 512

Nothing is written into the repository: the model goes to a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from lgip.cli import nonnegative_int, positive_int  # noqa: E402  (after the path is set)

PAIRS = 32
STEPS = 30
LR = 1.0
SEED = 0
REPEATS = 3  # each timing is the best of this many, batched and one-by-one interleaved
# One intra-op thread by default: on a 2-core machine shared with other jobs, two
# threads contend with them and the timings swing several-fold; --threads 2 on a quiet one.
THREADS = 1
MEMORY_PAIRS = 512
MEMORY_STEPS = 3
PAIR_BATCH_SIZES = [16, 256]
TARGET_RATIO = 10.0  # batched at least this much faster per pair


def load_model(args, folder: str):
    """The model in eval mode with frozen weights, its image size and normalisation
    (mean, std), and a one-line description. Default: the quickstart's tiny CLIP, built
    into `folder` and loaded through its spec as a script would; `--image-size` /
    `--patch-size`: the same configuration with another image grid, built in memory
    (seeded); `--model SPEC`: any open_clip spec."""
    import open_clip
    import torch

    from lgip import tiny

    preprocess_cfg = tiny.openclip_preprocess_cfg(tiny.OPENCLIP_MODEL_CFG["vision_cfg"]["image_size"])
    mean, std = preprocess_cfg["mean"], preprocess_cfg["std"]
    if args.image_size or args.patch_size:
        from open_clip.model import CLIP

        config = json.loads(json.dumps(tiny.OPENCLIP_MODEL_CFG))
        config["vision_cfg"]["image_size"] = args.image_size or config["vision_cfg"]["image_size"]
        config["vision_cfg"]["patch_size"] = args.patch_size or config["vision_cfg"]["patch_size"]
        torch.manual_seed(args.seed)
        model, name = CLIP(**config), "quickstart tiny CLIP with vision_cfg " + json.dumps(config["vision_cfg"])
    else:
        spec = args.model or tiny.build_tiny_openclip(os.path.join(folder, "tiny-openclip"))
        if not spec.startswith("openclip:"):
            raise SystemExit(f"error: --model takes an open_clip spec (openclip:...), not {spec!r}")
        model, _, preprocess = open_clip.create_model_and_transforms(spec[len("openclip:"):])
        normalize = next(t for t in preprocess.transforms if type(t).__name__ == "Normalize")
        mean, std = normalize.mean, normalize.std
        name = args.model or "tiny open_clip built by lgip.tiny.build_tiny_openclip"
    model = model.to(args.device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    parameters = sum(p.numel() for p in model.visual.parameters()) / 1e6
    return model, size, mean, std, f"{name}: {size}x{size} px, {parameters:.2f} M image-tower parameters"


def make_pairs(model, size, mean, std, count: int, seed: int, device: str):
    """`count` random images (normalised, as the `normalized` box optimises) and, as
    each one's target, the embedding of the next image."""
    import torch

    pixels = torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))
    sources = ((pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)).to(device)
    with torch.no_grad():
        targets = model.encode_image(sources.roll(1, dims=0))
    return sources, targets


def match(model, sources, targets, steps: int, pair_batch_size=None):
    from lgip.probes.matching import match_embeddings

    # Thresholds out of reach: every pair takes exactly `steps` updates in both modes.
    return match_embeddings(model.encode_image, sources, targets, box="normalized", steps=steps, lr=LR,
                            optimizer="sgd", loss_threshold=0.0, cos_threshold=1.0, pair_batch_size=pair_batch_size)


def timed(function, device: str):
    """(wall seconds, CPU seconds of this process, value) of one call."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    value = function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu, value


def speed(model, sources, targets, args) -> dict:
    """Best-of-`--repeats` wall and CPU seconds per pair for all pairs batched and for
    the same pairs one call each (interleaved), and how far apart their results are."""
    import torch

    match(model, sources[:2], targets[:2], 2)  # warm-up: first calls allocate and pick kernels
    match(model, sources[:1], targets[:1], 2)
    batched_times, single_times = [], []
    for _ in range(args.repeats):
        *seconds, batched = timed(lambda: match(model, sources, targets, args.steps), args.device)
        batched_times.append(seconds)
        *seconds, singles = timed(lambda: [match(model, sources[i:i + 1], targets[i:i + 1], args.steps)
                                           for i in range(len(sources))], args.device)
        single_times.append(seconds)
    one_by_one = torch.cat([result.matched for result in singles])
    with torch.no_grad():
        start_distance = ((model.encode_image(sources) - targets) ** 2).sum(1).mean()
    figures = {"max_abs_difference": float((batched.matched - one_by_one).abs().max()),
               "distance_start_mean": float(start_distance), "distance_end_mean": float(batched.distance.mean())}
    for column, clock in (("wall", 0), ("cpu", 1)):
        batched_best = min(times[clock] for times in batched_times)
        single_best = min(times[clock] for times in single_times)
        figures[column] = {"batched": batched_best / len(sources), "single": single_best / len(sources),
                           "ratio": single_best / batched_best}
    return figures


def memory_child(args) -> None:
    """In a fresh process: match `--memory-pairs` pairs with pool size `--memory-child`;
    print JSON with the memory before the call and the peak during it, in MB (resident
    memory on the CPU, allocated tensors on CUDA)."""
    import torch

    torch.set_num_threads(args.threads)
    model, size, mean, std, _ = load_model(args, folder="")
    sources, targets = make_pairs(model, size, mean, std, args.memory_pairs, args.seed, args.device)
    match(model, sources[:1], targets[:1], 1)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2 ** 20
    else:
        with open("/proc/self/status", encoding="ascii") as handle:
            before = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:")) / 1024
    seconds, _, _ = timed(lambda: match(model, sources, targets, args.memory_steps, args.memory_child), args.device)
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_mb": before, "peak_mb": peak, "seconds": seconds}))


def memory(spec_args: list, args) -> list:
    rows = []
    for pool in args.pair_batch_size:
        command = [sys.executable, os.path.abspath(__file__), *spec_args, "--memory-child", str(pool)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append({"pair_batch_size": pool, **json.loads(output.strip().splitlines()[-1])})
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="open_clip spec (default: the quickstart's tiny CLIP, built here)")
    parser.add_argument("--image-size", type=positive_int, default=None, help="the tiny CLIP with this image size instead")
    parser.add_argument("--patch-size", type=positive_int, default=None, help="the tiny CLIP with this patch size instead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=positive_int, default=THREADS, help="torch intra-op threads")
    parser.add_argument("--pairs", type=positive_int, default=PAIRS)
    parser.add_argument("--steps", type=positive_int, default=STEPS)
    parser.add_argument("--repeats", type=positive_int, default=REPEATS)
    parser.add_argument("--seed", type=nonnegative_int, default=SEED)
    parser.add_argument("--pair-batch-size", type=positive_int, nargs="+", default=PAIR_BATCH_SIZES,
                        help="pool sizes for the memory measurement")
    parser.add_argument("--memory-pairs", type=positive_int, default=MEMORY_PAIRS)
    parser.add_argument("--memory-steps", type=positive_int, default=MEMORY_STEPS)
    parser.add_argument("--memory-child", type=positive_int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main():
    args = parse_args()
    if args.memory_child is not None:
        memory_child(args)
        return
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_matching_") as folder:
        model, size, mean, std, description = load_model(args, folder)
        print(f"model: {description}")
        print(f"torch {torch.__version__} on {args.device}, {torch.get_num_threads()} intra-op threads, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
        print(f"descent: {args.pairs} pairs x {args.steps} steps, sgd lr {LR}, normalized box, "
              f"best of {args.repeats}")
        sources, targets = make_pairs(model, size, mean, std, args.pairs, args.seed, args.device)
        figures = speed(model, sources, targets, args)
        print("                 wall ms/pair   CPU ms/pair (this process)")
        print(f"  batched       {figures['wall']['batched'] * 1e3:12.2f}  {figures['cpu']['batched'] * 1e3:12.2f}")
        print(f"  one by one    {figures['wall']['single'] * 1e3:12.2f}  {figures['cpu']['single'] * 1e3:12.2f}")
        print(f"  ratio         {figures['wall']['ratio']:11.1f}x  {figures['cpu']['ratio']:11.1f}x   "
              f"(target >= {TARGET_RATIO:g}x in wall time: "
              f"{'met' if figures['wall']['ratio'] >= TARGET_RATIO else 'NOT met'})")
        print(f"  same result: largest difference {figures['max_abs_difference']:.2e}; "
              f"mean squared distance {figures['distance_start_mean']:.3f} -> {figures['distance_end_mean']:.3f}")

        # The children rebuild the same model: the built folder's spec, or the same flags.
        spec_args = ["--model", args.model or _built_spec(folder)] if not (args.image_size or args.patch_size) else \
            [*(["--image-size", str(args.image_size)] if args.image_size else []),
             *(["--patch-size", str(args.patch_size)] if args.patch_size else [])]
        spec_args += ["--device", args.device, "--threads", str(args.threads), "--seed", str(args.seed),
                      "--memory-pairs", str(args.memory_pairs), "--memory-steps", str(args.memory_steps)]
        print(f"memory: {args.memory_pairs} pairs x {args.memory_steps} steps, one fresh process per pool size "
              f"({'allocated CUDA memory' if args.device.startswith('cuda') else 'resident memory'})")
        for row in memory(spec_args, args):
            print(f"  pair-batch-size {row['pair_batch_size']:5d}: before {row['before_mb']:8.1f} MB, "
                  f"peak {row['peak_mb']:8.1f} MB, growth {row['peak_mb'] - row['before_mb']:7.1f} MB, "
                  f"{row['seconds']:.2f} s")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


def _built_spec(folder: str) -> str:
    return "openclip:local-dir:" + os.path.join(folder, "tiny-openclip")


if __name__ == "__main__":
    main()
