"""Models from spec strings. `load_model(spec, ...)` is the one entry point: it parses the
spec, finds the backend in BACKENDS and returns a ready model (eval mode, on the
device, in the precision).

The registry's contract: a backend is a subclass of `VisionLanguageModel` (see
lgip/models/base.py) whose constructor takes `(spec: ModelSpec, device, precision,
**options)`, ignores options it does not know, and raises InputError when the model
cannot be loaded. Backends are imported only when a spec names them, so a run of
SigLIP models never imports open_clip.
"""
from __future__ import annotations

import importlib

from lgip.io import InputError
from lgip.models.spec import PAPER_MODELS, PRECISIONS, RANDOM_WEIGHTS, SPEC_HELP, ModelSpec, parse_spec, parse_specs

# backend name (the spec's prefix) -> "module:class"
BACKENDS = {"openclip": "lgip.models.openclip:OpenClipModel", "hf": "lgip.models.hf:HFModel"}

__all__ = ["BACKENDS", "PAPER_MODELS", "PRECISIONS", "RANDOM_WEIGHTS", "SPEC_HELP", "ModelSpec", "load_model", "parse_spec",
           "parse_specs"]


def load_model(spec, device: str = "cpu", precision: str = "fp32", **options):
    """A spec string (or ModelSpec) in, a ready model out. `options` go to the backend
    (`siglip_padding` for transformers models). InputError for a malformed spec, an
    unknown precision or a model that cannot be loaded."""
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    module_name, class_name = BACKENDS[parsed.backend].split(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    return backend(parsed, device, precision, **options)
