"""The small module every evaluation script imports: its command line (flags that default
to the script's UPPERCASE constants), where the run's files go (every one checked before
any work), its place in a torchrun/srun launch, the run loop over models, printing and
writing. What the loop does lives in the `lgip` package; this is the scripts' face of it.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from lgip.cli import (default_workers, limit_marker, nonnegative_int, positive_float, positive_int, print_metrics, run_cli,
                      write_metric_file)
from lgip.engine import EvalSettings, evaluate_models
from lgip.engine.distributed import DIST_TIMEOUT_SECONDS, SOLO, Dist, read_launch
from lgip.engine.plan import Caption, VariantGroups
from lgip.engine.run import MetricFunction
from lgip.engine.settings import CACHE_FOLDER_NAME
from lgip.io import InputError, check_distinct_outputs, check_output_path
from lgip.models import PAPER_MODELS, PRECISIONS, SPEC_HELP, ModelSpec, parse_specs

__all__ = ["PAPER_MODELS", "RunOutputs", "check_run_outputs", "default_workers", "evaluate", "evaluation_arguments",
           "gather_models", "launch", "merge_model_files", "output_base", "print_metrics", "run_cli",
           "write_metric_file"]


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
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="evaluate only the first N records; file names then say so (<stem>__limitN__...)")
    parser.add_argument("--device", default=defaults["device"], help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--precision", default=defaults["precision"], choices=PRECISIONS,
                        help="weights and activations; amp: fp32 weights with autocast (default: %(default)s, as "
                             "the paper's tables)")
    parser.add_argument("--batch-size", type=positive_int, default=defaults["batch_size"],
                        help="images per batch (default: %(default)s)")
    parser.add_argument("--text-batch-size", type=positive_int, default=defaults["text_batch_size"],
                        help="texts per batch (default: %(default)s)")
    parser.add_argument("--workers", type=nonnegative_int, default=defaults["workers"],
                        help="DataLoader workers that decode images; 0 decodes in the main process (default: %(default)s, "
                             "from the CPU count)")
    parser.add_argument("--siglip-padding", choices=["max_length", "longest"], default="max_length",
                        help="SigLIP/SigLIP2 text padding: max_length (64, as trained; default) or longest "
                             "(the release's: a text's score then depends on its batch-mates)")
    parser.add_argument("--no-prefix-sharing", action="store_true",
                        help="encode every text on its own instead of computing the prefixes texts share once "
                             "(CLIP, OpenCLIP, EVA02: the same embeddings within about 3e-7, kept in a cache of "
                             "their own; SigLIP never shares)")
    parser.add_argument("--cache-dir", default=None,
                        help=f"embedding cache (default: {CACHE_FOLDER_NAME} beside the input; name another where "
                             f"the input's folder is read-only or shared)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    parser.add_argument("--cache-shard-rows", type=positive_int, default=defaults.get("cache_shard_rows", 4096),
                        help="new embeddings per cache file; a killed run loses at most this many (default: %(default)s)")
    parser.add_argument("--bootstrap", type=nonnegative_int, default=defaults["bootstrap"],
                        help="bootstrap resamples of images for 95%% intervals; 0 turns them off (default: %(default)s)")
    parser.add_argument("--seed", type=nonnegative_int, default=defaults["seed"], help="bootstrap seed (default: %(default)s)")
    parser.add_argument("--strict", action="store_true", help="a missing or undecodable image is an error, not a skip")
    if pairs:
        parser.add_argument("--dump-pairs", default=None, metavar="PATH",
                            help="also write one row per scored pair (image, caption, variant, scores, gap) for every "
                                 "model: CSV, gzip-compressed when PATH ends in .gz, Parquet when it ends in .parquet")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a per-model metric file that another model spec wrote under the same tag "
                             "(without it the run stops before any work)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--shard-models", action="store_true",
                        help="under torchrun or srun: give each rank whole models (balanced by weight size, seeded "
                             "by --seed) instead of sharing every model's images and texts over the ranks")
    parser.add_argument("--dist-timeout", type=positive_float, default=DIST_TIMEOUT_SECONDS, metavar="SECONDS",
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
    """`<output dir>/<input stem>` (an input folder's name as it is), plus `__limitN` for
    a --limit run: metric file names start with it, as in the release. The output dir
    defaults to the folder that holds the input."""
    name = os.path.basename(os.path.normpath(args.input))
    stem = name if os.path.isdir(args.input) else os.path.splitext(name)[0]
    folder = args.output_dir or os.path.dirname(os.path.abspath(os.path.normpath(args.input)))
    return os.path.join(folder, stem + limit_marker(args.limit))


class RunOutputs:
    """Where an evaluation run writes, worked out and checked before any work: the
    models (parsed, with tags unique in the run) and the metric file of each."""

    def __init__(self, specs: List[ModelSpec], base: str, per_model: Optional[str], combined: Optional[str]):
        self.specs, self.base, self.per_model, self.combined = specs, base, per_model, combined

    def per_model_path(self, tag: str) -> str:
        return self.base + self.per_model.format(tag=tag)

    @property
    def combined_path(self) -> str:
        return self.base + self.combined


def refuse_other_models_file(path: str, spec: ModelSpec) -> None:
    """InputError when `path` holds a metric file that another spec wrote (or one with
    no spec, such as the release's): two models that share a tag must not silently
    replace each other's results."""
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
        maker = (payload.get("config") or {}).get("spec") if isinstance(payload, dict) else None
    except (OSError, ValueError, AttributeError):
        maker = None
    if maker == spec.spec:
        return
    made = f"was written for model {maker!r}" if maker else "was not written by this toolkit (it has no config.spec)"
    raise InputError(f"{path}: {made}, and {spec.spec!r} is tagged {spec.tag!r} too; name this model with "
                     f"TAG=SPEC, choose another --output-dir, or pass --overwrite to replace the file")


def check_run_outputs(args, per_model: Optional[str] = None, combined: Optional[str] = None,
                      extra: Sequence[Tuple[str, Optional[str]]] = ()) -> RunOutputs:
    """Parse the model specs and check every place the run writes, before any work:
    the output folder, the embedding cache, --dump-pairs, the metric files, named
    `<output_base><per_model>` per model (`{tag}` in it) and `<output_base><combined>`,
    and a script's `extra` outputs [(flag, path)]. Refused: a place nothing can be
    written in, the wrong kind of thing, an output that is an input (the JSONL, a
    model's files), two outputs on one file, and a per-model file another spec wrote
    (unless --overwrite)."""
    specs = parse_specs(args.models)
    if not os.path.exists(args.input):  # said first: the default output places hang on it
        raise InputError(f"{args.input}: no such file or folder")
    inputs = [args.input] + [path for spec in specs for path in spec.local_files()]
    beside_input = os.path.dirname(os.path.abspath(os.path.normpath(args.input)))
    if args.output_dir:
        check_output_path(args.output_dir, inputs, "--output-dir", folder=True)
    else:
        check_output_path(beside_input, inputs, "--output-dir (not given: the input's folder)", folder=True)
    if not args.no_cache:
        if args.cache_dir:
            check_output_path(args.cache_dir, inputs, "--cache-dir", folder=True)
        else:
            check_output_path(os.path.join(beside_input, CACHE_FOLDER_NAME), inputs,
                              "--cache-dir (not given: beside the input; name one, or pass --no-cache)", folder=True)
    outputs = RunOutputs(specs, output_base(args), per_model, combined)
    written = [("--dump-pairs", getattr(args, "dump_pairs", None))]  # a probe without pairs has no such flag
    if per_model:
        written += [(f"the metric file of {spec.tag}", outputs.per_model_path(spec.tag)) for spec in specs]
    if combined:
        written.append(("the combined metric file", outputs.combined_path))
    written += list(extra)
    for flag, path in written:
        if path:
            check_output_path(path, inputs, flag)
    check_distinct_outputs(written)
    if per_model and not args.overwrite:
        for spec in specs:
            refuse_other_models_file(outputs.per_model_path(spec.tag), spec)
    return outputs


def evaluate(args, variant_groups: Callable[[Caption], VariantGroups], compute_metrics: MetricFunction,
             script: str, outputs: Optional[RunOutputs] = None, dist: Dist = SOLO) -> Iterator[Dict[str, Any]]:
    """The recipe every evaluation script shares, from its parsed flags: one metric dict
    per model, in order, for the rank that prints and writes it (see
    lgip.engine.run.evaluate_models): all of them on the main rank, none on the others,
    or under --shard-models each rank's own models. Without `outputs` (from
    check_run_outputs) the folders and --dump-pairs are checked here, before any work."""
    outputs = outputs or check_run_outputs(args)
    return evaluate_models(EvalSettings.from_args(args), outputs.specs, args.input, variant_groups, compute_metrics,
                           script, dump_path=getattr(args, "dump_pairs", None), dist=dist,
                           shard_models=args.shard_models)


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
    return [by_tag[spec.tag] for spec in parse_specs(args.models)]


def merge_model_files(outputs: RunOutputs, dist: Dist) -> None:
    """--merge-only: the combined file from the per-model files already there, written by
    the main rank; InputError naming every one that is missing or unreadable."""
    paths = [outputs.per_model_path(spec.tag) for spec in outputs.specs]
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
    if dist.is_main:
        write_metric_file(outputs.combined_path, results)
