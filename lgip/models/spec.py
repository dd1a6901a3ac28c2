"""Model spec strings: `openclip:MODEL[@PRETRAINED]` and `hf:ID_OR_DIR`, the paper's nine
models with the release's tags, and the precisions a model can run in. Standard library
only: scripts parse every spec before loading anything, so a typo fails at once.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Optional

from lgip.io import InputError

PRECISIONS = ("fp32", "fp16", "bf16", "amp")  # amp: fp32 weights, autocast activations

# The paper's nine models, by spec, with the release's model tags (so metric files can be
# compared with the release's by name).
PAPER_MODELS: Dict[str, str] = {
    "openclip:ViT-B-16@openai": "openclip_ViT-B-16_openai",
    "openclip:ViT-L-14@openai": "openclip_ViT-L-14_openai",
    "openclip:ViT-L-14@laion2b_s32b_b82k": "openclip_ViT-L-14_laion2b_s32b_b82k",
    "openclip:ViT-H-14@laion2b_s32b_b79k": "openclip_ViT-H-14_laion2b_s32b_b79k",
    "openclip:EVA02-L-14@merged2b_s4b_b131k": "openclip_EVA02-L-14_merged2b_s4b_b131k",
    "hf:google/siglip-base-patch16-224": "siglip_google_siglip-base-patch16-224",
    "hf:google/siglip-base-patch16-384": "siglip_google_siglip-base-patch16-384",
    "hf:google/siglip-large-patch16-384": "siglip_google_siglip-large-patch16-384",
    "hf:google/siglip2-base-patch16-224": "siglip2_google_siglip2-base-patch16-224",
}
SPEC_HELP = ("model specs: openclip:MODEL[@PRETRAINED] (MODEL a built-in name, local-dir:DIR or hf-hub:ORG/REPO; "
             "PRETRAINED a tag or a checkpoint path) or hf:ID_OR_DIR (a transformers CLIP/SigLIP/SigLIP2)")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec string: which backend, which model, which weights."""
    spec: str
    backend: str  # "openclip" or "hf"
    name: str  # open_clip model name (maybe local-dir:/hf-hub:) or a transformers id/folder
    pretrained: Optional[str] = None

    @property
    def tag(self) -> str:
        """The release's tag for the paper's models; a readable one from the spec otherwise."""
        if self.spec in PAPER_MODELS:
            return PAPER_MODELS[self.spec]
        if self.backend == "openclip":
            name = self.name.split(":", 1)[1] if self.name.startswith(("local-dir:", "hf-hub:")) else self.name
            parts = ["openclip", _readable(name)]
            if self.pretrained:
                parts.append(_readable(self.pretrained))
            return "_".join(parts)
        lowered = self.name.lower() + _local_model_type(self.name)
        family = "siglip2" if "siglip2" in lowered else "siglip" if "siglip" in lowered else "clip" if "clip" in lowered else "hf"
        return f"{family}_{_readable(self.name)}"


def _local_model_type(folder: str) -> str:
    """The `model_type` in a local transformers folder's config.json ("" otherwise)."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            return " " + str(json.load(handle).get("model_type", ""))
    except (OSError, ValueError):
        return ""


def _readable(text: str) -> str:
    """A file-name-safe rendering of a model name: a folder becomes its last two parts."""
    if os.path.isabs(text) or text.startswith("."):
        text = "_".join(os.path.normpath(text).split(os.sep)[-2:])
    text = text.replace("/", "_")
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text).strip("_")


def parse_spec(spec: str) -> ModelSpec:
    """Parse `openclip:MODEL[@PRETRAINED]` or `hf:ID_OR_DIR`; InputError otherwise."""
    backend, _, rest = spec.partition(":")
    if backend == "openclip" and rest:
        name, _, pretrained = rest.rpartition("@") if "@" in rest else (rest, "", "")
        if not name:
            raise InputError(f"model spec {spec!r}: nothing before '@'; expected openclip:MODEL[@PRETRAINED]")
        return ModelSpec(spec, "openclip", name, pretrained or None)
    if backend == "hf" and rest:
        return ModelSpec(spec, "hf", rest)
    raise InputError(f"model spec {spec!r} not understood; {SPEC_HELP}")

