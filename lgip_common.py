"""The small module every evaluation script imports: its command line (flags that default
to the script's UPPERCASE constants), its place in a torchrun/srun launch, the run loop
over models, printing and writing. What the loop does lives in the `lgip` package; this
is the scripts' face of it.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable, Dict, Iterator, List, Optional

from lgip.cli import default_workers, print_metrics, run_cli, write_metric_file
from lgip.engine import EvalSettings, evaluate_models
from lgip.engine.distributed import DIST_TIMEOUT_SECONDS, SOLO, Dist, read_launch
from lgip.engine.plan import Caption, VariantGroups
from lgip.engine.run import MetricFunction
from lgip.io import InputError
from lgip.models import PAPER_MODELS, PRECISIONS, SPEC_HELP, parse_spec

__all__ = ["PAPER_MODELS", "default_workers", "evaluate", "evaluation_arguments", "gather_models", "launch",
           "output_base", "print_metrics", "read_model_files", "run_cli", "write_metric_file"]


def evaluation_arguments(description: str, constants: Dict[str, Any]) -> argparse.ArgumentParser:
    """The flags every evaluation script takes, each defaulting to the script's UPPERCASE
    constant of the same meaning (`constants` is the script's `globals()`: JSONL_PATH,
    MODELS, DEVICE, PRECISION, BATCH_SIZE, TEXT_BATCH_SIZE, WORKERS, BOOTSTRAP, SEED)."""
    defaults = {"input": constants["JSONL_PATH"], "models": constants["MODELS"], "device": constants["DEVICE"],
                "precision": constants["PRECISION"], "batch_size": constants["BATCH_SIZE"],
                "text_batch_size": constants["TEXT_BATCH_SIZE"], "workers": constants["WORKERS"],
                "bootstrap": constants["BOOTSTRAP"], "seed": constants["SEED"],
                "cache_shard_rows": constants.get("CACHE_SHARD_ROWS", 4096)}
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=defaults["input"], help=f"perturbed JSONL (default: {defaults['input']})")
    parser.add_argument("--models", nargs="+", default=defaults["models"], metavar="SPEC",
                        help=f"{SPEC_HELP}. Default: the paper's nine models")
    parser.add_argument("--output-dir", default=None, help="where metric JSONs go (default: beside the input)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N records")
    parser.add_argument("--device", default=defaults["device"], help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--precision", default=defaults["precision"], choices=PRECISIONS,
                        help="weights and activations (default: %(default)s, as the paper's tables)")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="images per batch (default: %(default)s)")
    parser.add_argument("--text-batch-size", type=int, default=defaults["text_batch_size"],
                        help="texts per batch (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=defaults["workers"],
                        help="DataLoader workers that decode images (default: %(default)s, from the CPU count)")
    parser.add_argument("--siglip-padding", choices=["max_length", "longest"], default="max_length",
                        help="SigLIP/SigLIP2 text padding: max_length (64, as trained; default) or longest "
                             "(the release's: a text's score then depends on its batch-mates)")
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: .lgip_cache beside the input)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    parser.add_argument("--cache-shard-rows", type=int, default=defaults.get("cache_shard_rows", 4096),
                        help="new embeddings per cache file; a killed run loses at most this many (default: %(default)s)")
    parser.add_argument("--bootstrap", type=int, default=defaults["bootstrap"],
                        help="bootstrap resamples of images for 95%% intervals; 0 turns them off (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="bootstrap seed (default: %(default)s)")
    parser.add_argument("--strict", action="store_true", help="a missing or undecodable image is an error, not a skip")
    parser.add_argument("--dump-pairs", default=None, metavar="PATH",
                        help="also write one row per scored pair (image, caption, variant, scores, gap) for every "
                             "model: CSV, gzip-compressed when PATH ends in .gz, Parquet when it ends in .parquet")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--shard-models", action="store_true",
                        help="under torchrun or srun: give each rank whole models (balanced by weight size, seeded "
                             "by --seed) instead of sharing every model's images and texts over the ranks")
    parser.add_argument("--dist-timeout", type=float, default=DIST_TIMEOUT_SECONDS, metavar="SECONDS",
                        help="under torchrun or srun: how long a rank waits for the others in one exchange before "
                             "the run stops with an error (default: %(default)s)")
    return parser


def launch(args) -> Dist:
    """This process's place in a torchrun or srun launch (one process without one), its
    process group started: `args.device` becomes this rank's device (cuda:LOCAL_RANK
    for auto/cuda where CUDA is present) and `args.workers` its share of the machine's
    DataLoader workers. Use it as a context manager: it leaves the group at the end."""
    dist = Dist(read_launch())
    args.device = dist.init(args.device, args.dist_timeout)
    args.workers = dist.workers_per_rank(args.workers)
    return dist


def output_base(args) -> str:
    """`<output dir>/<input stem>`: metric file names start with it, as in the release."""
    stem = os.path.splitext(os.path.basename(args.input))[0]
    return os.path.join(args.output_dir or os.path.dirname(os.path.abspath(args.input)), stem)


def evaluate(args, variant_groups: Callable[[Caption], VariantGroups], compute_metrics: MetricFunction,
             script: str, dist: Dist = SOLO) -> Iterator[Dict[str, Any]]:
    """The recipe every evaluation script shares, from its parsed flags: one metric dict
    per model, in order, for the rank that prints and writes it (see
    lgip.engine.run.evaluate_models): all of them on the main rank, none on the others,
    or under --shard-models each rank's own models."""
    return evaluate_models(EvalSettings.from_args(args), args.models, args.input, variant_groups, compute_metrics,
                           script, dump_path=args.dump_pairs, dist=dist, shard_models=args.shard_models)


def gather_models(args, dist: Dist, results: List[Dict[str, Any]]) -> Optional[List[Dict[str, Any]]]:
    """Every model's result (what `evaluate` yielded, anything JSON can hold), in
    --models order, on the main rank; None on the others. Under --shard-models the main
    rank waits for the slowest rank and gathers theirs; otherwise it already has them."""
    if not (args.shard_models and dist.distributed):
        return results if dist.is_main else None
    dist.wait_for_all()
    every_rank = dist.gather_json(results)
    if every_rank is None:
        return None
    by_tag = {result["model_tag"]: result for part in every_rank for result in part}
    return [by_tag[parse_spec(spec).tag] for spec in args.models]


def read_model_files(paths: List[str]) -> List[Dict[str, Any]]:
    """Per-model metric files, in order, for --merge-only: InputError naming every one
    that is missing or unreadable."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise InputError(f"--merge-only: {len(missing)} per-model file(s) missing, first {missing[0]} (its model "
                         f"has not finished; run it, or leave it out of --models)")
    results = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                results.append(json.load(handle))
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: not a readable metric file ({err})") from None
    return results
