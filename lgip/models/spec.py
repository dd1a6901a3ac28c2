"""Model spec strings: `[TAG=]openclip:MODEL@PRETRAINED` and `[TAG=]hf:ID_OR_DIR`, the
paper's nine models with the release's tags, the tags a run gives its models (unique
within the run), and the precisions a model can run in. Standard library only: scripts
parse every spec before loading anything, so a typo fails at once.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

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
RANDOM_WEIGHTS = "random"  # openclip:MODEL@random: random weights, asked for explicitly
RESERVED_TAGS = {"ALL"}  # run_lgip_multi.py's combined file is <stem>__LGIP_ALL.metrics.json
USER_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
OPENCLIP_SCHEMAS = ("local-dir:", "hf-hub:")
OPENCLIP_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")  # what open_clip looks for in a local-dir
CHECKPOINT_SUFFIXES = OPENCLIP_WEIGHT_SUFFIXES + (".pt", ".ckpt")
SPEC_HELP = ("model specs: openclip:MODEL@PRETRAINED (MODEL a built-in name with PRETRAINED a tag or a checkpoint "
             "path, or @random for random weights; or MODEL local-dir:DIR or hf-hub:ORG/REPO, which carry their "
             "weights) or hf:ID_OR_DIR (a transformers CLIP/SigLIP/SigLIP2); TAG=SPEC names the model TAG in file "
             "names and tables")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec string: which backend, which model, which weights, and the tag its
    files and rows are named by: the user's (`TAG=SPEC`), else the one a run made unique
    (`run_tag`, see parse_specs), else `default_tag`."""
    spec: str  # as given, without any TAG= in front
    backend: str  # "openclip" or "hf"
    name: str  # open_clip model name (maybe local-dir:/hf-hub:) or a transformers id/folder
    pretrained: Optional[str] = None  # a tag, a checkpoint path, or RANDOM_WEIGHTS
    user_tag: Optional[str] = None
    run_tag: Optional[str] = None

    @property
    def random_weights(self) -> bool:
        return self.pretrained == RANDOM_WEIGHTS

    @property
    def tag(self) -> str:
        return self.user_tag or self.run_tag or self.default_tag

    @property
    def default_tag(self) -> str:
        """The release's tag for the paper's models; a readable one from the spec otherwise
        (a folder shows its last two parts). It depends on the spec alone, so it also
        names the model's embedding cache."""
        return self.tag_with_path_parts(2)

    def tag_with_path_parts(self, parts: int) -> str:
        """The tag from the spec, folders and checkpoint paths shown by their last
        `parts` components (more parts tell apart models whose shorter tags collide)."""
        if self.spec in PAPER_MODELS:
            return PAPER_MODELS[self.spec]
        if self.backend == "openclip":
            name = self.name.split(":", 1)[1] if self.name.startswith(OPENCLIP_SCHEMAS) else self.name
            pieces = ["openclip", _readable(name, parts)]
            if self.pretrained:
                pieces.append(_readable(self.pretrained, parts))
            return "_".join(pieces)
        lowered = self.name.lower() + _local_model_type(self.name)
        family = "siglip2" if "siglip2" in lowered else "siglip" if "siglip" in lowered else "clip" if "clip" in lowered else "hf"
        return f"{family}_{_readable(self.name, parts)}"

    def local_files(self) -> List[str]:
        """The files on disk the model is read from (a local folder's files, a
        checkpoint path): inputs of a run, which no output may replace."""
        location = self.name.split(":", 1)[1] if self.name.startswith("local-dir:") else self.name
        files = [self.pretrained] if self.pretrained and os.path.isfile(self.pretrained) else []
        if os.path.isdir(location):
            files += [entry.path for entry in os.scandir(location) if entry.is_file()]
        return files

    def path_depth(self) -> int:
        """How many components the deepest path in the spec has (1 when it names none)."""
        texts = [self.name.split(":", 1)[1] if self.name.startswith(OPENCLIP_SCHEMAS) else self.name, self.pretrained or ""]
        return max(len(os.path.normpath(text).split(os.sep)) if _is_path(text) else 1 for text in texts)


def _local_model_type(folder: str) -> str:
    """The `model_type` in a local transformers folder's config.json ("" otherwise)."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            return " " + str(json.load(handle).get("model_type", ""))
    except (OSError, ValueError):
        return ""


def _is_path(text: str) -> bool:
    return os.path.isabs(text) or text.startswith(".")


def _readable(text: str, parts: int = 2) -> str:
    """A file-name-safe rendering of a model name: a folder becomes its last `parts` parts."""
    if _is_path(text):
        text = "_".join(part for part in os.path.normpath(text).split(os.sep)[-parts:] if part)
    text = text.replace("/", "_")
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text).strip("_")


def _looks_like_folder(name: str) -> bool:
    """A transformers name that can only be a folder: absolute, ./ ../ ~, more than
    one slash (a Hub id is NAME or ORG/NAME), or something that exists on disk."""
    return (os.path.isabs(name) or name.startswith(("./", "../", "~")) or name.count("/") > 1
            or os.path.exists(name))


def _check_folder(spec: str, folder: str) -> None:
    if not os.path.exists(folder):
        raise InputError(f"model spec {spec!r}: {folder}: no such folder")
    if not os.path.isdir(folder):
        raise InputError(f"model spec {spec!r}: {folder} is a file, not a model folder")


def _parse_openclip(text: str, rest: str, user_tag: Optional[str]) -> ModelSpec:
    """`openclip:...`: a built-in name must say which weights (@PRETRAINED, or @random);
    a local-dir:/hf-hub: model carries its own (open_clip ignores @PRETRAINED for them)."""
    random_suffix = "@" + RANDOM_WEIGHTS
    if rest.startswith(OPENCLIP_SCHEMAS):
        schema = rest.split(":", 1)[0]
        name, pretrained = (rest[: -len(random_suffix)], RANDOM_WEIGHTS) if rest.endswith(random_suffix) else (rest, None)
        location = name.split(":", 1)[1]
        if pretrained is None and "@" in location and not os.path.isdir(location):
            raise InputError(f"model spec {text!r}: open_clip ignores @{location.rpartition('@')[2]} for {schema}: "
                             f"models, which carry their own weights; drop it (or write @random for random weights)")
        if schema == "local-dir":
            _check_folder(text, location)
            if not os.path.isfile(os.path.join(location, "open_clip_config.json")):
                raise InputError(f"model spec {text!r}: {location} has no open_clip_config.json")
            has_weights = any(entry.endswith(OPENCLIP_WEIGHT_SUFFIXES) for entry in os.listdir(location))
            if not has_weights and pretrained is None:
                raise InputError(f"model spec {text!r}: {location} holds no weights "
                                 f"({', '.join('*' + s for s in OPENCLIP_WEIGHT_SUFFIXES)}), so open_clip would "
                                 f"evaluate random ones; add @random if that is what you want")
        return ModelSpec(text, "openclip", name, pretrained, user_tag)
    name, _, pretrained = rest.partition("@")  # a built-in name has no '@'; a checkpoint path may
    if not name:
        raise InputError(f"model spec {text!r}: nothing before '@'; expected openclip:MODEL@PRETRAINED")
    if not pretrained:
        raise InputError(f"model spec {text!r} names no weights, so open_clip would evaluate random ones: add "
                         f"@PRETRAINED (a tag such as @openai, or a checkpoint path), or @random if random "
                         f"weights are what you want")
    if (os.sep in pretrained or pretrained.startswith((".", "~")) or pretrained.endswith(CHECKPOINT_SUFFIXES)) \
            and not os.path.isfile(pretrained):
        raise InputError(f"model spec {text!r}: {pretrained}: no such checkpoint file")
    return ModelSpec(text, "openclip", name, pretrained, user_tag)


def parse_spec(spec: str) -> ModelSpec:
    """Parse `[TAG=]openclip:MODEL@PRETRAINED` or `[TAG=]hf:ID_OR_DIR`. InputError for
    anything else, for an open_clip model that names no weights (unless @random), and
    for a folder that is not there; so a typo fails before anything is loaded."""
    text, user_tag = spec, None
    if not spec.startswith(("openclip:", "hf:")) and "=" in spec:
        user_tag, _, text = spec.partition("=")
        if not USER_TAG.fullmatch(user_tag):
            raise InputError(f"model spec {spec!r}: the tag {user_tag!r} must be letters, digits, '.', '_' or '-' "
                             f"(starting with a letter or digit, at most 100): it becomes part of file names")
        if user_tag in RESERVED_TAGS:
            raise InputError(f"model spec {spec!r}: the tag {user_tag!r} is taken (the file with every model's "
                             f"results is named by it); choose another")
    backend, _, rest = text.partition(":")
    if backend == "openclip" and rest:
        return _parse_openclip(text, rest, user_tag)
    if backend == "hf" and rest:
        if _looks_like_folder(rest):
            _check_folder(text, rest)
        return ModelSpec(text, "hf", rest, None, user_tag)
    raise InputError(f"model spec {text!r} not understood; {SPEC_HELP}")


def parse_specs(specs: Sequence[Union[str, ModelSpec]]) -> List[ModelSpec]:
    """Parse a run's specs and give each a tag no other model of the run has. The
    paper's models keep the release's tags and `TAG=SPEC` keeps TAG; a derived tag that
    collides shows more of its folder path (`openclip_a_models_m` and
    `openclip_b_models_m` for .../a/models/m and .../b/models/m), and where paths
    cannot tell the models apart, a short hash of the spec. InputError for a spec given
    twice or one tag given to two models."""
    parsed = [spec if isinstance(spec, ModelSpec) else parse_spec(spec) for spec in specs]
    given: Dict[Tuple[str, Optional[str]], int] = {}
    for spec in parsed:
        key = (spec.spec, spec.user_tag)
        if key in given:
            raise InputError(f"model spec {spec.spec!r} is given twice; give it once (or give each a TAG=)")
        given[key] = 1
    fixed = [spec.user_tag or (PAPER_MODELS.get(spec.spec)) for spec in parsed]
    depth = [2] * len(parsed)  # path components in each derived tag

    def candidate(index: int) -> str:
        spec = parsed[index]
        if fixed[index]:
            return fixed[index]
        if depth[index] > spec.path_depth():
            return f"{spec.default_tag}_{hashlib.sha1(spec.spec.encode()).hexdigest()[:8]}"
        return spec.tag_with_path_parts(depth[index])

    while True:
        owners: Dict[str, List[int]] = {}
        for index in range(len(parsed)):
            owners.setdefault(candidate(index), []).append(index)
        clashes = {tag: indices for tag, indices in owners.items() if len(indices) > 1}
        if not clashes:
            break
        for tag, indices in clashes.items():
            movable = [index for index in indices if not fixed[index] and depth[index] <= parsed[index].path_depth()]
            if not movable:
                names = " and ".join(repr(parsed[index].spec) for index in indices)
                raise InputError(f"models {names} would share the tag {tag!r}; name them with TAG=SPEC")
            for index in movable:
                depth[index] += 1
    return [spec if spec.user_tag or candidate(index) == spec.default_tag else replace(spec, run_tag=candidate(index))
            for index, spec in enumerate(parsed)]
