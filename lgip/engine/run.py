"""The per-model loop every evaluation script shares: read the plan once, then per model
load it (or, where the cache knows it, a stand-in that loads it only if something is
missing), encode through the cache, score, let the script compute its metrics, and
attach the run facts and the config block.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

from lgip.engine.cache import library_versions
from lgip.engine.distributed import SOLO, Dist, assign_longest_first
from lgip.engine.dump import PairDump
from lgip.engine.plan import CAPTIONS_PER_RECORD, Caption, PairPlan, VariantGroups, build_plan
from lgip.engine.scores import Scores, image_failures_message, run_facts, score_plan
from lgip.engine.settings import EvalSettings
from lgip.engine.warm import StaleRecord, load_for_record, model_for_run, write_record
from lgip.io import InputError, file_sha256, refuse_inputs, where
from lgip.models import ModelSpec, parse_specs
from lgip.models.device import resolve_device
from lgip.stats import MIN_RECORDS_FOR_INTERVAL, Bootstrap

if TYPE_CHECKING:
    from lgip.models.base import VisionLanguageModel

# compute_metrics(scores, bootstrap) -> the script's metric dict
MetricFunction = Callable[[Scores, Bootstrap], Dict[str, Any]]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")  # what --shard-models weighs a local model by


def run_config(settings: EvalSettings, model: "VisionLanguageModel", input_path: str, input_sha256: str,
               timings: Dict[str, float], script: str, world_size: int = 1) -> Dict[str, Any]:
    """The `config` block: everything needed to know how a metric file was made
    (`world_size`: the ranks of the launch that made it)."""
    return {
        "script": script, "spec": model.spec.spec, "model_tag": model.spec.tag, "backend": model.backend,
        "model_settings": model.settings(), "precision": settings.precision, "device": model.device,
        "input": os.path.abspath(input_path), "input_sha256": input_sha256, "limit": settings.limit,
        "bootstrap_resamples": settings.bootstrap, "seed": settings.seed, "batch_size": settings.batch_size,
        "text_batch_size": settings.text_batch_size, "workers": settings.workers, "world_size": world_size,
        "cache": None if settings.cache_dir is None else os.path.abspath(settings.cache_dir),
        "versions": library_versions(),
        "timings_seconds": {name: round(seconds, 3) for name, seconds in timings.items()},
    }


LAUNCH_DETAILS = ("timings_seconds", "world_size")  # config keys that differ between launches of one computation


def without_launch_details(value: Any) -> Any:
    """A metric file's content (a dict, or a list of them) without LAUNCH_DETAILS: what
    must be equal between two launches of the same run on any number of ranks."""
    if isinstance(value, dict):
        return {key: without_launch_details(item) for key, item in value.items() if key not in LAUNCH_DETAILS}
    if isinstance(value, list):
        return [without_launch_details(item) for item in value]
    return value


def weights_bytes(spec: ModelSpec) -> Optional[int]:
    """The size of a model's weights where its spec names local files (a `local-dir:`
    or transformers folder, a checkpoint path); None where they would come from a hub."""
    paths = [spec.name[len("local-dir:"):] if spec.name.startswith("local-dir:") else spec.name]
    if spec.pretrained:
        paths.append(spec.pretrained)
    total = 0
    for path in paths:
        if os.path.isfile(path):
            total += os.path.getsize(path)
        elif os.path.isdir(path):
            total += sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path)
                         if name.endswith(WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(path, name)))
    return total or None


def models_of_rank(specs: List[ModelSpec], dist: Dist, seed: int) -> List[ModelSpec]:
    """`--shard-models`: this rank's whole models, balanced over the ranks by the size
    of their weights (models whose size cannot be known here count as the mean of the
    others), ties broken by `seed`."""
    tags = [spec.tag for spec in specs]
    repeated = sorted({tag for tag in tags if tags.count(tag) > 1})
    if repeated:
        raise InputError(f"--shard-models: model tag(s) {', '.join(repeated)} appear more than once in --models; "
                         f"two ranks would write the same metric file")
    sizes = [weights_bytes(spec) for spec in specs]
    known = [size for size in sizes if size is not None]
    fallback = sum(known) / len(known) if known else 1.0
    costs = [fallback if size is None else float(size) for size in sizes]
    return [specs[i] for i in assign_longest_first(costs, dist.world_size, seed)[dist.rank]]


def split_models(specs: List[ModelSpec], dist: Dist, shard_models: bool, seed: int) -> Tuple[List[ModelSpec], Dist]:
    """(the models this rank runs, the Dist each of them runs under): every model, its
    work shared by all ranks (`dist`); or, with `shard_models` under several ranks, this
    rank's whole models (models_of_rank), each run as one process (SOLO)."""
    if shard_models and dist.distributed:
        return models_of_rank(specs, dist, seed), SOLO
    return specs, dist


def evaluate_models(settings: EvalSettings, model_specs: List[str], input_path: str,
                    variant_groups: Callable[[Caption], VariantGroups], compute_metrics: MetricFunction, script: str,
                    dump_path: Optional[str] = None, dist: Dist = SOLO,
                    shard_models: bool = False) -> Iterator[Dict[str, Any]]:
    """Yield one metric dict per model, in order: the plan is read once, then each model
    is loaded, encoded through the cache, scored and measured. With `dump_path`, every
    scored pair of every model goes into one dump file, written when all are done.

    Under several ranks (`dist`), every rank encodes a share of each model's images and
    texts and the main rank alone gets the metric dicts; with `shard_models` each rank
    runs whole models of its own instead and gets theirs."""
    started = time.perf_counter()
    if settings.limit is not None and settings.limit < 1:
        raise InputError(f"--limit {settings.limit}: expected at least 1")
    specs = parse_specs(model_specs)  # a typo fails before any work; tags unique in the run
    if shard_models and dist.distributed and dump_path:
        raise InputError(f"--dump-pairs {dump_path} with --shard-models: every rank would write that one file; "
                         f"drop --shard-models (the ranks then share each model) or dump in another run")
    specs, engine_dist = split_models(specs, dist, shard_models, settings.seed)
    plan = build_plan(input_path, variant_groups, settings.limit, settings.strict)
    if dump_path:
        refuse_inputs(dump_path, plan.images, "--dump-pairs")
    check_images_exist(plan, input_path, settings.strict)
    if dist.is_main:
        warn_about_captions(plan, input_path)
    input_sha256 = file_sha256(input_path)
    read_seconds = time.perf_counter() - started
    device = resolve_device(settings.device)
    with (PairDump(dump_path) if dump_path and dist.is_main else contextlib.nullcontext()) as dump:
        for spec in specs:
            metrics = evaluate_model(settings, spec, plan, device, input_path, read_seconds, input_sha256,
                                     compute_metrics, script, dump, engine_dist, dist.world_size)
            if metrics is not None:
                yield metrics
    if dump_path and dist.is_main:
        print(f"wrote {dump_path} (one row per scored pair)")


def check_images_exist(plan: PairPlan, input_path: str, strict: bool) -> None:
    """With --strict, a missing image file stops the run before any model is loaded."""
    if not strict:
        return
    missing = [index for index, path in enumerate(plan.images) if not os.path.isfile(path)]
    if missing:
        first = missing[0]
        raise InputError(f"{where(input_path, plan.image_lines[first])}: image {plan.images[first]} could not be read "
                         f"(no such file); {len(missing)} image file(s) missing in all")


def warn_about_captions(plan: PairPlan, input_path: str) -> None:
    """One warning each for records with fewer than five captions and for empty
    captions: they are scored as given, as images that fail are skipped, with a count."""
    if plan.short_records:
        print(f"warning: {where(input_path, plan.short_records[0])}: record has fewer than {CAPTIONS_PER_RECORD} "
              f"captions; {len(plan.short_records)} such record(s), scored as they are (--strict makes this an error)",
              file=sys.stderr)
    if plan.empty_captions:
        line_no, index = plan.empty_captions[0]
        print(f"warning: {where(input_path, line_no)}: caption {index} is empty; {len(plan.empty_captions)} empty "
              f"caption(s), scored as they are (--strict makes this an error)", file=sys.stderr)


def evaluate_model(settings: EvalSettings, spec: ModelSpec, plan: PairPlan, device: str, input_path: str,
                   read_seconds: float, input_sha256: str, compute_metrics: MetricFunction, script: str,
                   dump: Optional[PairDump], dist: Dist = SOLO, world_size: int = 1) -> Optional[Dict[str, Any]]:
    """One model's metric dict: load (or stand in for) the model, encode through the
    cache, score, measure. Under several ranks (`dist`) each encodes a share and only
    the main rank gets the dict."""
    timings = {"read_input": read_seconds}
    model, weights, timings["load_model"] = model_for_run(settings, spec, device)
    try:
        scores = score_plan(model, plan, settings, timings, dist)
    except StaleRecord:  # the weights changed under an unchanged size and time: start over
        started = time.perf_counter()
        model, weights = load_for_record(settings, spec, device)
        timings["load_model"] += time.perf_counter() - started
        scores = score_plan(model, plan, settings, timings, dist)
    if scores is None:
        return None
    if scores.failures:  # with --strict, score_plan has stopped already
        print(f"warning: {image_failures_message(plan, scores.failures)}; {len(scores.failures)} image(s) skipped "
              f"with their records (--strict makes this an error)", file=sys.stderr)
    if not scores.record_valid.any():
        raise InputError(f"{input_path}: no record has a readable image and a caption")
    started = time.perf_counter()
    bootstrap = Bootstrap(scores.num_samples(), settings.bootstrap, settings.seed, MIN_RECORDS_FOR_INTERVAL)
    metrics = {"model_tag": spec.tag, **compute_metrics(scores, bootstrap)}
    metrics["ci95"] = bootstrap.intervals()
    metrics.update(run_facts(scores, plan.pairs_of("same")))
    timings["metrics"] = time.perf_counter() - started
    if dump is not None:
        started = time.perf_counter()
        dump.write(scores, spec.tag)
        timings["dump_pairs"] = time.perf_counter() - started
    metrics["config"] = run_config(settings, model, input_path, input_sha256, timings, script, world_size)
    if weights is not None:
        write_record(settings, model, weights)
    return metrics
