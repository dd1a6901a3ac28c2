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
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional

from lgip.engine.cache import library_versions
from lgip.engine.dump import PairDump
from lgip.engine.plan import Caption, PairPlan, VariantGroups, build_plan
from lgip.engine.scores import Scores, run_facts, score_plan
from lgip.engine.settings import EvalSettings
from lgip.engine.warm import StaleRecord, load_for_record, model_for_run, write_record
from lgip.io import InputError, file_sha256, where
from lgip.models import ModelSpec, parse_spec
from lgip.models.device import resolve_device
from lgip.stats import Bootstrap

if TYPE_CHECKING:
    from lgip.models.base import VisionLanguageModel

# compute_metrics(scores, bootstrap) -> the script's metric dict
MetricFunction = Callable[[Scores, Bootstrap], Dict[str, Any]]


def run_config(settings: EvalSettings, model: "VisionLanguageModel", input_path: str, input_sha256: str,
               timings: Dict[str, float], script: str) -> Dict[str, Any]:
    """The `config` block: everything needed to know how a metric file was made."""
    return {
        "script": script, "spec": model.spec.spec, "model_tag": model.spec.tag, "backend": model.backend,
        "model_settings": model.settings(), "precision": settings.precision, "device": model.device,
        "input": os.path.abspath(input_path), "input_sha256": input_sha256, "limit": settings.limit,
        "bootstrap_resamples": settings.bootstrap, "seed": settings.seed, "batch_size": settings.batch_size,
        "text_batch_size": settings.text_batch_size, "workers": settings.workers,
        "cache": None if settings.cache_dir is None else os.path.abspath(settings.cache_dir),
        "versions": library_versions(),
        "timings_seconds": {name: round(seconds, 3) for name, seconds in timings.items()},
    }


def evaluate_models(settings: EvalSettings, model_specs: List[str], input_path: str,
                    variant_groups: Callable[[Caption], VariantGroups], compute_metrics: MetricFunction, script: str,
                    dump_path: Optional[str] = None) -> Iterator[Dict[str, Any]]:
    """Yield one metric dict per model, in order: the plan is read once, then each model
    is loaded, encoded through the cache, scored and measured. With `dump_path`, every
    scored pair of every model goes into one dump file, written when all are done."""
    started = time.perf_counter()
    if settings.limit is not None and settings.limit < 1:
        raise InputError(f"--limit {settings.limit}: expected at least 1")
    specs = [parse_spec(spec) for spec in model_specs]  # a typo fails before any work
    plan = build_plan(input_path, variant_groups, settings.limit)
    input_sha256 = file_sha256(input_path)
    read_seconds = time.perf_counter() - started
    device = resolve_device(settings.device)
    with (PairDump(dump_path) if dump_path else contextlib.nullcontext()) as dump:
        for spec in specs:
            yield evaluate_model(settings, spec, plan, device, input_path, read_seconds, input_sha256,
                                 compute_metrics, script, dump)
    if dump_path:
        print(f"wrote {dump_path} (one row per scored pair)")


def evaluate_model(settings: EvalSettings, spec: ModelSpec, plan: PairPlan, device: str, input_path: str,
                   read_seconds: float, input_sha256: str, compute_metrics: MetricFunction, script: str,
                   dump: Optional[PairDump]) -> Dict[str, Any]:
    """One model's metric dict: load (or stand in for) the model, encode through the
    cache, score, measure."""
    timings = {"read_input": read_seconds}
    model, weights, timings["load_model"] = model_for_run(settings, spec, device)
    try:
        scores = score_plan(model, plan, settings, timings)
    except StaleRecord:  # the weights changed under an unchanged size and time: start over
        started = time.perf_counter()
        model, weights = load_for_record(settings, spec, device)
        timings["load_model"] += time.perf_counter() - started
        scores = score_plan(model, plan, settings, timings)
    if scores.failures:
        first_index, first_reason = sorted(scores.failures.items())[0]
        message = (f"{where(input_path, plan.image_lines[first_index])}: image {plan.images[first_index]} "
                   f"could not be read ({first_reason})")
        if settings.strict:
            raise InputError(message + f"; {len(scores.failures)} image(s) failed in all")
        print(f"warning: {message}; {len(scores.failures)} image(s) skipped with their records "
              f"(--strict makes this an error)", file=sys.stderr)
    if not scores.record_valid.any():
        raise InputError(f"{input_path}: no record has a readable image and a caption")
    started = time.perf_counter()
    bootstrap = Bootstrap(scores.num_samples(), settings.bootstrap, settings.seed)
    metrics = {"model_tag": spec.tag, **compute_metrics(scores, bootstrap)}
    metrics["ci95"] = bootstrap.intervals()
    metrics.update(run_facts(scores, plan.pairs_of("same")))
    timings["metrics"] = time.perf_counter() - started
    if dump is not None:
        started = time.perf_counter()
        dump.write(scores, spec.tag)
        timings["dump_pairs"] = time.perf_counter() - started
    metrics["config"] = run_config(settings, model, input_path, input_sha256, timings, script)
    if weights is not None:
        write_record(settings, model, weights)
    return metrics
