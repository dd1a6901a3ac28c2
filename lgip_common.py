"""The small module every evaluation script imports: its command line (flags that default
to the script's UPPERCASE constants), the run loop over models, printing and writing.
What the loop does lives in the `lgip` package; this is the scripts' face of it.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Dict, Iterator

from lgip.cli import default_workers, print_metrics, run_cli, write_metric_file
from lgip.engine import EvalSettings, evaluate_models
from lgip.engine.plan import Caption, VariantGroups
from lgip.engine.run import MetricFunction
from lgip.models import PAPER_MODELS, PRECISIONS, SPEC_HELP

__all__ = ["PAPER_MODELS", "default_workers", "evaluate", "evaluation_arguments", "output_base", "print_metrics",
           "run_cli", "write_metric_file"]


def evaluation_arguments(description: str, constants: Dict[str, Any], input_help: str = "perturbed JSONL",
                         pairs: bool = True) -> argparse.ArgumentParser:
    """The flags every evaluation script takes, each defaulting to the script's UPPERCASE
    constant of the same meaning (`constants` is the script's `globals()`: JSONL_PATH,
    MODELS, DEVICE, PRECISION, BATCH_SIZE, TEXT_BATCH_SIZE, WORKERS, BOOTSTRAP, SEED).
    `input_help` says what --input is; without `pairs`, no --dump-pairs (a probe that
    scores no caption pairs)."""
    defaults = {"input": constants["JSONL_PATH"], "models": constants["MODELS"], "device": constants["DEVICE"],
                "precision": constants["PRECISION"], "batch_size": constants["BATCH_SIZE"],
                "text_batch_size": constants["TEXT_BATCH_SIZE"], "workers": constants["WORKERS"],
                "bootstrap": constants["BOOTSTRAP"], "seed": constants["SEED"],
                "cache_shard_rows": constants.get("CACHE_SHARD_ROWS", 4096)}
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=defaults["input"], help=f"{input_help} (default: {defaults['input']})")
    parser.add_argument("--models", nargs="+", default=defaults["models"], metavar="SPEC",
                        help=f"{SPEC_HELP}. Default: the paper's nine models")
    parser.add_argument("--output-dir", default=None, help="where metric JSONs go (default: beside the input)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N records")
    parser.add_argument("--device", default=defaults["device"], help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--precision", default=defaults["precision"], choices=PRECISIONS,
                        help="weights and activations; amp: fp32 weights with autocast (default: %(default)s, as the paper's tables)")
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
    if pairs:
        parser.add_argument("--dump-pairs", default=None, metavar="PATH",
                            help="also write one row per scored pair (image, caption, variant, scores, gap) for every "
                                 "model: CSV, gzip-compressed when PATH ends in .gz, Parquet when it ends in .parquet")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def output_base(args) -> str:
    """`<output dir>/<input stem>`: metric file names start with it, as in the release."""
    stem = os.path.splitext(os.path.basename(args.input))[0]
    return os.path.join(args.output_dir or os.path.dirname(os.path.abspath(args.input)), stem)


def evaluate(args, variant_groups: Callable[[Caption], VariantGroups], compute_metrics: MetricFunction,
             script: str) -> Iterator[Dict[str, Any]]:
    """The recipe every evaluation script shares, from its parsed flags: one metric dict
    per model, in order (see lgip.engine.run.evaluate_models)."""
    return evaluate_models(EvalSettings.from_args(args), args.models, args.input, variant_groups, compute_metrics,
                           script, dump_path=args.dump_pairs)
