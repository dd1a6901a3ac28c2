"""Warm runs: what a run needs to know of a model without loading it, recorded in the
cache by the run that loaded it, so that a run whose embeddings are all cached builds no
model and imports neither torch nor the model libraries.

The record, `<cache>/index/<model tag>-<key>.json`, is keyed by everything a run knows
before loading (spec, precision, device type, SigLIP padding, prefix sharing, library
versions). It holds the model's settings (what its cache folder is keyed by and the
metric file's config records), its padding, and where its weights were read from with
their state on disk then (sizes, modification times, the hub's revision pointer). A
later run reads that state again; where it matches, a `CachedModel` stands in for the
model, and loads it only if something must be decoded, tokenised or encoded after all
(that time then counts in the stage that needed it).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from lgip.engine.cache import CACHE_FORMAT, library_versions
from lgip.engine.settings import EvalSettings
from lgip.io import write_json
from lgip.models import load_model
from lgip.models.spec import ModelSpec
from lgip.models.weights import weight_sources, weights_state

if TYPE_CHECKING:
    from lgip.models.base import VisionLanguageModel

INDEX_FOLDER = "index"
RECORD_FORMAT = 1


def record_path(settings: EvalSettings, spec: ModelSpec, device: str) -> Tuple[str, Dict[str, Any]]:
    """(path of the model's record in the cache index, what its name is keyed by)."""
    keyed = {"record_format": RECORD_FORMAT, "cache_format": CACHE_FORMAT, "spec": spec.spec,
             "precision": settings.precision, "device": device.split(":")[0],
             "siglip_padding": settings.siglip_padding, "prefix_sharing": settings.prefix_sharing,
             "versions": library_versions()}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(settings.cache_dir, INDEX_FOLDER, f"{spec.default_tag}-{key}.json"), keyed


def load_options(settings: EvalSettings) -> Dict[str, Any]:
    """The backend options a run's settings ask for."""
    return {"siglip_padding": settings.siglip_padding, "prefix_sharing": settings.prefix_sharing,
            "progress": settings.progress}


def _weights_now(spec: ModelSpec):
    """(sources, their state now) of the spec's weights, or None where they cannot be named."""
    sources = weight_sources(spec)
    return None if sources is None else (sources, weights_state(sources))


def write_record(settings: EvalSettings, model: "VisionLanguageModel", weights) -> None:
    """Record `model` in the cache index, with `weights` = (sources, state)."""
    path, keyed = record_path(settings, model.spec, model.device)
    sources, state = weights
    write_json(path, {"key": keyed, "weights": {"sources": sources, "state": state},
                      "model": {"backend": model.backend, "padding": getattr(model, "padding", "max_length"),
                                "settings": model.settings()}})


def load_for_record(settings: EvalSettings, spec: ModelSpec, device: str):
    """(the model loaded, its weights' (sources, state) to record, or None): with a
    cache, and where the weights' state was the same before and after loading, so that
    the record names what was loaded. The caller writes the record once the model's run
    has succeeded (a failed run leaves no files)."""
    before = _weights_now(spec) if settings.cache_dir else None
    model = load_model(spec, device, settings.precision, **load_options(settings))
    after = _weights_now(spec) if settings.cache_dir else None
    return model, (after if after is not None and (before is None or before == after) else None)


class StaleRecord(Exception):
    """The model a CachedModel loaded does not have the recorded settings (its weights
    changed without their size or modification time changing): the record is deleted
    and the run starts over."""


class CachedModel:
    """A model known from its record: spec, backend, device, padding and settings, enough
    to find its cache folder and fill a metric file's config. `loaded()` loads the model
    itself the first time something needs it (StaleRecord if it is not the recorded one)."""

    def __init__(self, spec: ModelSpec, device: str, record: Dict[str, Any], load: Callable[[], Any],
                 record_file: Optional[str] = None):
        self.spec, self.device = spec, device
        self.backend, self.padding = record["model"]["backend"], record["model"]["padding"]
        self._settings, self._load, self._model = record["model"]["settings"], load, None
        self._record_file = record_file

    def settings(self) -> Dict[str, Any]:
        return dict(self._settings)

    def loaded(self) -> "VisionLanguageModel":
        if self._model is None:
            model = self._load()
            if json.loads(json.dumps(model.settings(), default=str)) != self._settings:
                if self._record_file:  # so that no later run trusts it, even if this one stops
                    with contextlib.suppress(OSError):
                        os.remove(self._record_file)
                raise StaleRecord(f"{self.spec.spec}: the loaded model's settings differ from the cache's record")
            self._model = model
        return self._model


def cached_model(settings: EvalSettings, spec: ModelSpec, device: str) -> Optional[CachedModel]:
    """A CachedModel where the cache holds a record of this model under these settings
    and its weights are as recorded; None otherwise (no cache, no record, or weights
    that changed: the model must be loaded)."""
    if settings.cache_dir is None:
        return None
    path, keyed = record_path(settings, spec, device)
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        weights = record["weights"]
        if record["key"] != keyed or weights_state(weights["sources"]) != weights["state"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):  # no record, or one this code cannot read
        return None
    return CachedModel(spec, device, record, lambda: load_model(spec, device, settings.precision,
                                                                **load_options(settings)), path)


def model_for_run(settings: EvalSettings, spec: ModelSpec, device: str):
    """(model, weights to record or None, seconds it took): a CachedModel where the
    cache knows the model and its weights are unchanged, else the model loaded."""
    started = time.perf_counter()
    model, weights = cached_model(settings, spec, device), None
    if model is None:
        model, weights = load_for_record(settings, spec, device)
    return model, weights, time.perf_counter() - started
