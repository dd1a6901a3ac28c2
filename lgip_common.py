"""What the LGIP scripts share: input/output with clear errors and atomic writes,
and (further down) model specs, loaders, batched encoders, the embedding cache
and the metrics.

torch, open_clip and transformers are imported inside the functions that need them,
so the data-preparation scripts can import this module without loading them.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

# ---------------------------------------------------------------------------
# Errors and command-line entry
# ---------------------------------------------------------------------------


class InputError(Exception):
    """A problem with what the user gave us. The message names the file, the line
    (where there is one) and what is wrong; scripts print it and exit with code 2."""


def where(path: str, line_no: int | None = None) -> str:
    """`path:line` (or just `path`) as error messages start."""
    return f"{path}:{line_no}" if line_no is not None else str(path)


def run_cli(main: Callable[[], Any]) -> None:
    """Run a script's main(); an InputError becomes one `error:` line and exit code 2."""
    try:
        main()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no partial output was written", file=sys.stderr)
        sys.exit(130)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(path: str, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file beside `path` for writing; rename it onto `path` only when
    the block finishes without an exception, so a stopped run leaves no half-written
    output and never damages the file that was there."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part", dir=folder)
    try:
        kwargs = {"encoding": encoding, "newline": "\n"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


def write_json(path: str, payload: Any) -> None:
    """Write `payload` as indented JSON, atomically."""
    with atomic_output(path) as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def file_sha256(path: str, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def refuse_same_path(input_path: str, output_path: str) -> None:
    """Writing onto the input would destroy it; refuse before anything is read."""
    if os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise InputError(f"{output_path}: output path is the input file; choose another --output")
    if os.path.abspath(input_path) == os.path.abspath(output_path):
        raise InputError(f"{output_path}: output path is the input file; choose another --output")


def iter_jsonl(path: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """Yield (line number, record) for each non-blank line of a JSONL file, streaming.

    Raises InputError naming the file and line for a missing file, bytes that are not
    UTF-8, a line that is not JSON, a line that is not a JSON object, or a file with
    no records at all."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    seen_record = False
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{where(path, line_no)}: not UTF-8 text ({err.reason} at byte {err.start})") from None
            if line_no == 1 and line.startswith("\ufeff"):
                line = line[1:]
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{where(path, line_no)}: not valid JSON ({err.msg}, column {err.colno})") from None
            if not isinstance(record, dict):
                raise InputError(f"{where(path, line_no)}: expected a JSON object, got {type(record).__name__}")
            seen_record = True
            yield line_no, record
    if not seen_record:
        raise InputError(f"{path}: the file holds no records")


def check_captions(record: Dict[str, Any], path: str, line_no: int) -> list:
    """Return the record's `orig_captions`, or raise InputError if it is missing or
    is not a list of strings."""
    captions = record.get("orig_captions")
    if captions is None:
        raise InputError(f"{where(path, line_no)}: record has no 'orig_captions'")
    if not isinstance(captions, list):
        raise InputError(f"{where(path, line_no)}: 'orig_captions' must be a list of strings, got {type(captions).__name__}")
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise InputError(
                f"{where(path, line_no)}: 'orig_captions'[{index}] must be a string, got {type(caption).__name__}"
            )
    return captions


# ---------------------------------------------------------------------------
# Model specs
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Models: one class per backend, each owning its preprocessing
# ---------------------------------------------------------------------------

PRECISIONS = ("fp32", "fp16", "bf16")


def resolve_device(name: str) -> str:
    """`auto` becomes cuda, then mps, then cpu, whichever is there; others are checked."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps: MPS is not available on this machine")
    if not (name in ("cpu", "mps", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise InputError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return name


def _torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def weights_fingerprint(module) -> str:
    """A fingerprint of a model's weights that costs one pass over them: names, shapes,
    the sum of each tensor and its first and last values. Two different checkpoints of
    one architecture get different fingerprints."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
            if flat.numel():
                edge = torch.cat([flat[:64], flat[-64:]]).to(torch.float64).cpu().numpy().tobytes()
                digest.update(edge + repr(float(flat.sum(dtype=torch.float64))).encode())
    return digest.hexdigest()[:32]


class TokenBatch:
    """Tokenised texts, padded to the model's full text length: `ids` [N, L] int64,
    `lengths` (tokens up to and including the end token), `truncated` (the text did
    not fit)."""

    def __init__(self, ids, lengths, truncated):
        self.ids, self.lengths, self.truncated = ids, lengths, truncated


class TokenTable:
    """Every text of a run tokenised once and stored ragged (each text's own tokens,
    no padding), so memory follows the tokens: `lengths`, `truncated`, and `row_hash`,
    a 64-bit hash of the padded row for finding texts with equal token ids."""

    def __init__(self, flat, offsets, lengths, truncated, row_hash, pad_id: int, full_width: int):
        self.flat, self.offsets, self.lengths = flat, offsets, lengths
        self.truncated, self.row_hash, self.pad_id, self.full_width = truncated, row_hash, pad_id, full_width

    def rows(self, texts, width: int):
        """int64 tensor [len(texts), width]: each text's tokens, then `pad_id`."""
        import numpy as np
        import torch

        out = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        for row, text in enumerate(texts):
            length = min(int(self.lengths[text]), width)
            out[row, :length] = self.flat[self.offsets[text]:self.offsets[text] + length]
        return torch.from_numpy(out)

    def same_ids(self, left, right):
        """Boolean per pair: texts `left[k]` and `right[k]` have identical token ids."""
        import numpy as np

        same = (self.row_hash[left] == self.row_hash[right]) & (self.lengths[left] == self.lengths[right])
        for k in np.flatnonzero(same):  # a hash match is checked token by token
            a, b, n = self.offsets[left[k]], self.offsets[right[k]], self.lengths[left[k]]
            same[k] = np.array_equal(self.flat[a:a + n], self.flat[b:b + n])
        return same


class VisionLanguageModel:
    """What every backend offers the engine. Embeddings come back as L2-normalised
    float32 CPU tensors."""

    backend = ""
    trims_padding = False  # True where dropping padding after the longest text is exact
    pad_id = 0

    def settings(self) -> Dict[str, Any]:
        """Everything about preprocessing and tokenisation that changes an embedding."""
        raise NotImplementedError

    def image_transform(self, image):
        """PIL image -> tensor the image tower takes (picklable: DataLoader workers run it)."""
        raise NotImplementedError

    def encode_images(self, pixels):
        raise NotImplementedError

    def tokenize(self, texts: List[str]) -> TokenBatch:
        raise NotImplementedError

    def encode_tokens(self, ids, lengths):
        """Embed a batch of token rows already cut to the width the caller chose."""
        raise NotImplementedError


def _normalised(features):
    import torch

    features = features.float()
    return torch.nn.functional.normalize(features, dim=-1).cpu()


class OpenClipModel(VisionLanguageModel):
    """An open_clip model (CLIP, EVA02-CLIP, ...), built through open_clip's own factory."""

    backend = "openclip"

    def __init__(self, spec: ModelSpec, device: str, precision: str):
        import warnings

        import open_clip
        import torch

        self.spec, self.device, self.precision = spec, device, precision
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=spec.pretrained)
                self.tokenizer = open_clip.get_tokenizer(spec.name)
            except (RuntimeError, ValueError, FileNotFoundError, OSError) as err:
                raise InputError(f"model {spec.spec}: open_clip could not load it: {err}") from None
        self.quick_gelu_mismatch = False
        for warning in caught:
            text = str(warning.message)
            if "QuickGELU" in text:
                self.quick_gelu_mismatch = True
                print(f"warning: {spec.spec}: {text} The weights were trained with QuickGELU; "
                      f"the '-quickgelu' model name builds it that way (see README).", file=sys.stderr)
        self.model = model.to(device=device, dtype=_torch_dtype(precision)).eval()
        self.preprocess = preprocess
        self.context_length = int(getattr(self.tokenizer, "context_length", 77))
        from open_clip.tokenizer import SimpleTokenizer

        # Exact trimming needs causal attention, pooling at the end token, and pad id 0
        # after the text: then nothing before the end token ever sees the padding.
        self.trims_padding = (isinstance(model, open_clip.model.CLIP) and model.attn_mask is not None
                              and getattr(model, "text_pool_type", "argmax") == "argmax"
                              and isinstance(self.tokenizer, SimpleTokenizer))
        self.weights = weights_fingerprint(self.model)
        self._torch = torch

    def settings(self):
        return {
            "backend": self.backend, "spec": self.spec.spec, "weights_fingerprint": self.weights,
            "image_preprocess": repr(self.preprocess), "tokenizer": type(self.tokenizer).__name__,
            "context_length": self.context_length, "padding": "trimmed after the longest text (exact)"
            if self.trims_padding else f"max_length ({self.context_length})",
            "quick_gelu_mismatch": self.quick_gelu_mismatch, "precision": self.precision,
        }

    def image_transform(self, image):
        return self.preprocess(image)

    def encode_images(self, pixels):
        with self._torch.no_grad():
            pixels = pixels.to(device=self.device, dtype=_torch_dtype(self.precision))
            return _normalised(self.model.encode_image(pixels))

    def tokenize(self, texts):
        import numpy as np

        ids = self.tokenizer(texts)
        nonzero = (ids != 0).numpy()
        lengths = np.where(nonzero.any(1), self.context_length - np.argmax(nonzero[:, ::-1], axis=1), 0)
        full = lengths >= self.context_length
        truncated = np.zeros(len(texts), dtype=bool)
        for row in np.flatnonzero(full):  # a full row may be exactly full or cut: count the BPE tokens
            truncated[row] = len(self.tokenizer.encode(texts[row])) + 2 > self.context_length
        return TokenBatch(ids, lengths.astype(np.int64), truncated)

    def encode_tokens(self, ids, lengths):
        torch = self._torch
        with torch.no_grad():
            ids = ids.to(self.device)
            if not self.trims_padding or ids.shape[1] == self.context_length:
                return _normalised(self.model.encode_text(ids))
            return _normalised(self._encode_text_trimmed(ids))

    def _encode_text_trimmed(self, ids):
        """open_clip's CLIP.encode_text on a sequence shorter than the context: the
        positional embedding and causal mask cut to its width."""
        from open_clip.transformer import text_global_pool

        model = self.model
        width = ids.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(ids).to(cast_dtype) + model.positional_embedding[:width].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:width, :width])
        x = model.ln_final(x)
        x = text_global_pool(x, ids, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        if model.text_projection is not None:
            x = model.text_projection(x) if isinstance(model.text_projection, self._torch.nn.Linear) else x @ model.text_projection
        return x


class HFImageTransform:
    """A transformers image processor as a picklable PIL -> tensor function."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image):
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def _features(output):
    """transformers 4.x returns a tensor from get_*_features, 5.x a model output."""
    return output if hasattr(output, "dim") else output.pooler_output


class HFModel(VisionLanguageModel):
    """A transformers dual encoder (SigLIP, SigLIP2, CLIP) through AutoModel."""

    backend = "hf"

    def __init__(self, spec: ModelSpec, device: str, precision: str, siglip_padding: str = "max_length"):
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.spec, self.device, self.precision = spec, device, precision
        try:
            model = AutoModel.from_pretrained(spec.name)
            self.tokenizer = AutoTokenizer.from_pretrained(spec.name)
            self.image_processor = AutoImageProcessor.from_pretrained(spec.name)
        except (OSError, ValueError) as err:
            raise InputError(f"model {spec.spec}: transformers could not load it: {err}") from None
        self.model = model.to(device=device, dtype=_torch_dtype(precision)).eval()
        text_config = getattr(model.config, "text_config", model.config)
        self.max_length = int(getattr(text_config, "max_position_embeddings", 64))
        self.is_siglip = "siglip" in model.config.model_type
        # SigLIP pools the last position, so padding is part of what it reads; it was
        # trained with every text padded to max_length. "longest" is the release's choice.
        self.padding = siglip_padding if self.is_siglip else "max_length"
        self.uses_attention_mask = "attention_mask" in self.tokenizer.model_input_names
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.weights = weights_fingerprint(self.model)
        self._torch = torch

    def settings(self):
        return {
            "backend": self.backend, "spec": self.spec.spec, "model_type": self.model.config.model_type,
            "weights_fingerprint": self.weights, "image_processor": type(self.image_processor).__name__,
            "image_preprocess": repr(self.image_processor.to_dict()),
            "tokenizer": type(self.tokenizer).__name__, "max_length": self.max_length, "padding": self.padding,
            "attention_mask": self.uses_attention_mask, "precision": self.precision,
        }

    def image_transform(self, image):
        return HFImageTransform(self.image_processor)(image)

    def encode_images(self, pixels):
        with self._torch.no_grad():
            pixels = pixels.to(device=self.device, dtype=_torch_dtype(self.precision))
            return _normalised(_features(self.model.get_image_features(pixel_values=pixels)))

    def tokenize(self, texts):
        import numpy as np

        encoded = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                                 return_tensors="pt")
        ids = encoded["input_ids"]
        full_lengths = [len(row) for row in self.tokenizer(texts, truncation=False)["input_ids"]]
        lengths = np.minimum(np.asarray(full_lengths, dtype=np.int64), self.max_length)
        truncated = np.asarray(full_lengths) > self.max_length
        return TokenBatch(ids, lengths, truncated)

    def encode_tokens(self, ids, lengths):
        torch = self._torch
        with torch.no_grad():
            ids = ids.to(self.device)
            inputs = {"input_ids": ids}
            if self.uses_attention_mask:
                positions = torch.arange(ids.shape[1], device=ids.device)
                inputs["attention_mask"] = (positions[None, :] < torch.as_tensor(lengths, device=ids.device)[:, None]).long()
            return _normalised(_features(self.model.get_text_features(**inputs)))


def load_model(spec: str | ModelSpec, device: str = "cpu", precision: str = "fp32",
               siglip_padding: str = "max_length") -> VisionLanguageModel:
    """The one entry point: a spec string in, a ready model out (eval mode, on `device`,
    in `precision`). Raises InputError when the spec is malformed or cannot be loaded."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if parsed.backend == "openclip":
        return OpenClipModel(parsed, device, precision)
    return HFModel(parsed, device, precision, siglip_padding)


# ---------------------------------------------------------------------------
# The scoring plan: which (image, caption, variant) pairs a script scores
# ---------------------------------------------------------------------------

# A script tells the plan, per record and caption index, its variant groups: each group
# is a list of (text, kind) that the release encoded in one call (which matters only
# for `--siglip-padding longest`, where a batch's padding changes its embeddings).
VariantGroups = List[List[Tuple[str, str]]]


def string_list(record: Dict[str, Any], key: str, index: str, path: str, line_no: int, text_field: str = "") -> List[str]:
    """`record[key][index]` as a list of strings ([] when absent). With `text_field`, the
    items are objects and their `text_field` is taken. InputError on any other shape."""
    table = record.get(key)
    if table is None:
        return []
    if not isinstance(table, dict):
        raise InputError(f"{where(path, line_no)}: '{key}' must be an object keyed by caption index, got {type(table).__name__}")
    items = table.get(index, [])
    if not isinstance(items, list):
        raise InputError(f"{where(path, line_no)}: '{key}'['{index}'] must be a list, got {type(items).__name__}")
    texts = []
    for position, item in enumerate(items):
        if text_field:
            item = item.get(text_field) if isinstance(item, dict) else None
        if not isinstance(item, str):
            wanted = f"an object with a string '{text_field}'" if text_field else "a string"
            raise InputError(f"{where(path, line_no)}: '{key}'['{index}'][{position}] must be {wanted}")
        texts.append(item)
    return texts


TYPED_FLIP_PREFIX = "diff_caps_"


def record_flips(record: Dict[str, Any], index: str, path: str, line_no: int) -> List[Tuple[str, str]]:
    """The caption's flips, each once, as (text, type): `diff_caps[index]` then any flip
    only a typed key lists; the type from the first `diff_caps_<type>` key that lists
    the text, `all` when none does."""
    flip_type: Dict[str, str] = {}
    for key in record:
        if key.startswith(TYPED_FLIP_PREFIX):
            for text in string_list(record, key, index, path, line_no):
                flip_type.setdefault(text, key[len(TYPED_FLIP_PREFIX):])
    flips = string_list(record, "diff_caps", index, path, line_no)
    flips += [text for text in flip_type if text not in set(flips)]
    return [(text, flip_type.get(text, "all")) for text in flips]


class PairPlan:
    """Every pair one script scores, as integer arrays, built by streaming the JSONL once.

    Records -> images (unique resolved paths); captions (one row per record caption);
    pairs (one row per caption variant, pointing at its caption row). Texts are interned:
    `texts` holds each unique string once. Padding groups follow the release's encode
    calls, for `--siglip-padding longest`."""

    def __init__(self):
        import array

        self.images: List[str] = []
        self.image_lines: List[int] = []
        self.record_image_id: List[str] = []  # the record's `image_id`, for per-pair dumps
        self._image_index: Dict[str, int] = {}
        self.texts: List[str] = []
        self._text_index: Dict[str, int] = {}
        self.kinds: List[str] = []
        self._kind_index: Dict[str, int] = {}
        self.record_image = array.array("i")
        self.record_line = array.array("i")
        self.caption_record = array.array("i")
        self.caption_index = array.array("h")
        self.caption_text = array.array("i")
        self.caption_group = array.array("i")
        self.pair_caption = array.array("i")
        self.pair_text = array.array("i")
        self.pair_kind = array.array("h")
        self.pair_group = array.array("i")
        self.num_groups = 0

    def _intern_text(self, text: str) -> int:
        index = self._text_index.get(text)
        if index is None:
            index = self._text_index[text] = len(self.texts)
            self.texts.append(text)
        return index

    def kind_code(self, kind: str) -> int:
        code = self._kind_index.get(kind)
        if code is None:
            code = self._kind_index[kind] = len(self.kinds)
            self.kinds.append(kind)
        return code

    def add_record(self, line_no: int, image_path: str, captions: List[str], groups_per_caption: List[VariantGroups],
                   image_id: Any = None):
        image = self._image_index.get(image_path)
        if image is None:
            image = self._image_index[image_path] = len(self.images)
            self.images.append(image_path)
            self.image_lines.append(line_no)
        record = len(self.record_image)
        self.record_image.append(image)
        self.record_line.append(line_no)
        self.record_image_id.append("" if image_id is None else str(image_id))
        caption_group = self._new_group()
        for index, (caption, groups) in enumerate(zip(captions, groups_per_caption)):
            caption_row = len(self.caption_record)
            self.caption_record.append(record)
            self.caption_index.append(index)
            self.caption_text.append(self._intern_text(caption))
            self.caption_group.append(caption_group)
            for group in groups:
                if not group:
                    continue
                group_id = self._new_group()
                for text, kind in group:
                    self.pair_caption.append(caption_row)
                    self.pair_text.append(self._intern_text(text))
                    self.pair_kind.append(self.kind_code(kind))
                    self.pair_group.append(group_id)

    def _new_group(self) -> int:
        self.num_groups += 1
        return self.num_groups - 1

    def finish(self) -> "PairPlan":
        """Turn the growing arrays into numpy arrays and drop the lookup tables."""
        import numpy as np

        for name in ("record_image", "record_line", "caption_record", "caption_index", "caption_text", "caption_group",
                     "pair_caption", "pair_text", "pair_kind", "pair_group"):
            setattr(self, name, np.frombuffer(getattr(self, name), dtype=getattr(self, name).typecode).astype(np.int64))
        self._image_index = self._text_index = None
        return self

    @property
    def num_records(self) -> int:
        return len(self.record_image)

    def pairs_of(self, *prefixes: str):
        """Boolean mask of the pairs whose kind is one of, or starts with one of, `prefixes`
        (`"diff"` matches `diff` and `diff:color`)."""
        import numpy as np

        codes = [code for code, kind in enumerate(self.kinds)
                 if any(kind == p or kind.startswith(p + ":") for p in prefixes)]
        return np.isin(self.pair_kind, codes)


def resolve_image_path(image_path: str, jsonl_path: str) -> str:
    """A relative image path is relative to the JSONL's folder (the release's layout)."""
    if os.path.isabs(image_path):
        return image_path
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(jsonl_path)), image_path))


def build_plan(jsonl_path: str, variant_groups: Callable[[Dict[str, Any], str, str, int], VariantGroups],
               limit: Optional[int] = None) -> PairPlan:
    """Stream the JSONL and record every pair `variant_groups(record, index, path, line)`
    names for each caption. Bad records raise InputError with file and line."""
    plan = PairPlan()
    for line_no, record in iter_jsonl(jsonl_path):
        if limit is not None and plan.num_records >= limit:
            break
        image_path = record.get("image_path")
        if not isinstance(image_path, str) or not image_path:
            raise InputError(f"{where(jsonl_path, line_no)}: record has no 'image_path' string")
        captions = check_captions(record, jsonl_path, line_no)
        groups = [variant_groups(record, str(index), jsonl_path, line_no) for index in range(len(captions))]
        plan.add_record(line_no, resolve_image_path(image_path, jsonl_path), captions, groups, record.get("image_id"))
    return plan.finish()


# ---------------------------------------------------------------------------
# Embedding cache: append-only shards, each checked before it is trusted
# ---------------------------------------------------------------------------

CACHE_FORMAT = 1


def library_versions() -> Dict[str, str]:
    """Versions of the libraries that compute an embedding."""
    import importlib.metadata as metadata

    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "open_clip_torch", "transformers", "numpy", "Pillow", "timm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


class ShardStore:
    """Embeddings of one kind (images or texts) for one model and settings, as shard
    files `<kind>-*.npz` holding keys, rows and a sha256 of both. Nothing is held in
    memory but the rows not yet written: `fill` reads the shards one at a time and
    copies the rows a run asks for. A shard that cannot be read or whose digest does not
    match is deleted with a warning and its rows are encoded again."""

    def __init__(self, folder: Optional[str], kind: str, shard_rows: int, settings: Optional[Dict[str, Any]] = None):
        self.folder, self.kind, self.shard_rows, self.settings = folder, kind, shard_rows, settings
        self._pending_keys: List[str] = []
        self._pending_rows: List[Any] = []
        self.damaged = 0

    @staticmethod
    def _digest(keys, embeddings) -> str:
        import numpy as np

        digest = hashlib.sha256(np.ascontiguousarray(keys).tobytes())
        digest.update(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def _shards(self):
        """(keys, embeddings) of each readable shard; damaged ones are removed."""
        import numpy as np

        if self.folder is None or not os.path.isdir(self.folder):
            return
        for name in sorted(os.listdir(self.folder)):
            if not (name.startswith(self.kind + "-") and name.endswith(".npz")):
                continue
            path = os.path.join(self.folder, name)
            try:
                with np.load(path, allow_pickle=False) as shard:
                    keys, embeddings, digest = shard["keys"], shard["embeddings"], str(shard["digest"])
                if digest != self._digest(keys, embeddings) or len(keys) != len(embeddings) or embeddings.ndim != 2:
                    raise ValueError("checksum mismatch")
            except Exception as err:  # any unreadable shard is rebuilt, whatever broke it
                print(f"warning: cache file {path} is damaged ({type(err).__name__}: {err}); removed, "
                      f"its embeddings will be computed again", file=sys.stderr)
                self.damaged += 1
                with contextlib.suppress(OSError):
                    os.remove(path)
                continue
            yield keys, embeddings

    def fill(self, keys: Sequence[Optional[str]]):
        """(found mask, matrix) for `keys` (distinct, or None: never cached): the cached
        rows, NaN elsewhere; the matrix is None when nothing was found."""
        import numpy as np

        wanted = np.array([key or "" for key in keys], dtype="S48")
        order = np.argsort(wanted, kind="stable")
        sorted_wanted = wanted[order]
        found = np.zeros(len(keys), dtype=bool)
        matrix = None
        for shard_keys, embeddings in self._shards():
            shard_keys = shard_keys.astype("S48")
            positions = np.searchsorted(sorted_wanted, shard_keys, side="left")
            hits = positions < len(sorted_wanted)
            hits[hits] = sorted_wanted[positions[hits]] == shard_keys[hits]
            if not hits.any():
                continue
            if matrix is None:
                matrix = np.full((len(keys), embeddings.shape[1]), np.nan, dtype=np.float32)
            rows = order[positions[hits]]
            matrix[rows] = embeddings[hits]
            found[rows] = True
        return found, matrix

    def add(self, keys: Sequence[str], embeddings) -> None:
        """Queue new rows; every `shard_rows` of them become a shard on disk."""
        if self.folder is None:
            return
        self._pending_keys.extend(keys)
        self._pending_rows.append(embeddings)
        if len(self._pending_keys) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        """Write the rows not yet on disk as one shard, atomically."""
        import numpy as np

        if self.folder is None or not self._pending_keys:
            return
        keys = np.asarray(self._pending_keys)
        embeddings = np.concatenate(self._pending_rows).astype(np.float32)
        settings_path = os.path.join(self.folder, "settings.json")
        if self.settings is not None and not os.path.exists(settings_path):  # created on first write only
            write_json(settings_path, self.settings)
        path = os.path.join(self.folder, f"{self.kind}-{time.time_ns()}-{os.getpid()}.npz")
        with atomic_output(path, "wb") as handle:
            np.savez(handle, keys=keys, embeddings=embeddings, digest=np.asarray(self._digest(keys, embeddings)))
        self._pending_keys, self._pending_rows = [], []


def cache_folder(cache_dir: Optional[str], model_tag: str, settings: Dict[str, Any]):
    """(folder, keyed settings) for one model's embeddings under everything that changes
    them; (None, None) when caching is off. The folder is made by the first shard
    written, with `settings.json` there so a person can see what it holds."""
    if cache_dir is None:
        return None, None
    keyed = {"cache_format": CACHE_FORMAT, "settings": settings, "versions": library_versions()}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"{model_tag}-{key}"), keyed


def text_key(text: str, pad_width: int) -> str:
    """The cache key of a text encoded at a fixed padded width (0: the model's default)."""
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return f"{digest}#{pad_width}" if pad_width else digest


def image_key(path: str) -> str:
    """The cache key of an image file: its path, size and modification time."""
    stat = os.stat(path)
    return hashlib.sha1(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()


# ---------------------------------------------------------------------------
# Encoding: each unique image and each unique text once, in batches, through the cache
# ---------------------------------------------------------------------------

class _ImageFiles:
    """A torch Dataset over image files: (index, pixels or None, failure reason)."""

    def __init__(self, paths: List[str], transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from PIL import Image

        try:
            with Image.open(self.paths[index]) as image:
                return index, self.transform(image.convert("RGB")), ""
        except Exception as err:  # a missing or undecodable image is reported, never fatal here
            return index, None, f"{type(err).__name__}: {err}"


def _collate_images(items):
    import torch

    decoded = [(index, pixels) for index, pixels, _ in items if pixels is not None]
    failed = [(index, reason) for index, pixels, reason in items if pixels is None]
    indices = [index for index, _ in decoded]
    pixels = torch.stack([p for _, p in decoded]) if decoded else None
    return indices, pixels, failed


def encode_images(model: VisionLanguageModel, paths: List[str], store: ShardStore, batch_size: int,
                  workers: int, progress: bool = True):
    """Embeddings [len(paths), D] (NaN rows for images that failed) and {index: reason}
    for the failures. Cached images are not opened; the rest decode in DataLoader
    workers with the model's own preprocessing."""
    import numpy as np
    import torch
    from tqdm import tqdm

    keys: List[Optional[str]] = []
    for path in paths:
        try:
            keys.append(image_key(path))
        except OSError:
            keys.append(None)  # missing: the loader reports why
    found, matrix = store.fill(keys)
    missing = np.flatnonzero(~found).tolist()
    batches = [missing[start:start + batch_size] for start in range(0, len(missing), batch_size)]
    failures: Dict[int, str] = {}
    if batches:
        loader = torch.utils.data.DataLoader(_ImageFiles(paths, model.image_transform), batch_sampler=batches,
                                             num_workers=workers, collate_fn=_collate_images)
        with tqdm(total=len(missing), desc=f"images [{model.spec.spec}]", unit="img", disable=not progress,
                  dynamic_ncols=True) as bar:
            for indices, pixels, failed in loader:
                failures.update(failed)
                if pixels is not None:
                    embeddings = model.encode_images(pixels).numpy()
                    if matrix is None:
                        matrix = np.full((len(paths), embeddings.shape[1]), np.nan, dtype=np.float32)
                    matrix[indices] = embeddings
                    store.add([keys[i] for i in indices], embeddings)
                bar.update(len(indices) + len(failed))
        store.flush()
    return (matrix if matrix is not None else np.full((len(paths), 1), np.nan, np.float32)), failures


def tokenize_all(model: VisionLanguageModel, texts: List[str], chunk: int = 8192, progress: bool = True) -> TokenTable:
    """Tokenise every text once, in chunks so memory stays flat, into a TokenTable."""
    import numpy as np
    from tqdm import tqdm

    flat, lengths, truncated, hashes, full_width = [], [], [], [], 1
    hash_weights = np.random.default_rng(0).integers(1, 2 ** 63, size=512, dtype=np.uint64) | np.uint64(1)
    for start in tqdm(range(0, len(texts), chunk), desc="tokenising", unit="chunk",
                      disable=not progress or len(texts) <= chunk, dynamic_ncols=True):
        batch = model.tokenize(texts[start:start + chunk])
        ids = np.asarray(batch.ids, dtype=np.int64)
        full_width = ids.shape[1]
        filled = np.arange(full_width)[None, :] < batch.lengths[:, None]
        flat.append(ids[filled].astype(np.int32))
        lengths.append(batch.lengths)
        truncated.append(batch.truncated)
        hashes.append((ids.astype(np.uint64) * hash_weights[:full_width]).sum(axis=1))
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    return TokenTable(np.concatenate(flat) if flat else np.zeros(0, np.int32), offsets, lengths,
                      np.concatenate(truncated) if truncated else np.zeros(0, bool),
                      np.concatenate(hashes) if hashes else np.zeros(0, np.uint64), model.pad_id, full_width)


def encode_text_units(model: VisionLanguageModel, texts: List[str], tokens: TokenTable, unit_text, unit_width,
                      store: ShardStore, batch_size: int, progress: bool = True):
    """Embeddings [U, D] of text units: text `unit_text[u]` padded to `unit_width[u]`
    tokens (0: the model's default). Only units missing from the cache are encoded,
    in batches of one width: where trimming is exact (causal, end-token pooling) that
    width is each text's own length, so no padding is encoded at all."""
    import numpy as np
    from tqdm import tqdm

    keys = [text_key(texts[t], int(w)) for t, w in zip(unit_text.tolist(), unit_width.tolist())]
    found, matrix = store.fill(keys)
    missing = np.flatnonzero(~found)
    if len(missing):
        width = unit_width[missing].copy()
        default = width == 0
        width[default] = tokens.lengths[unit_text[missing[default]]] if model.trims_padding else tokens.full_width
        order = np.lexsort((missing, width))
        missing, width = missing[order], width[order]
        starts = np.flatnonzero(np.r_[True, width[1:] != width[:-1]])
        with tqdm(total=len(missing), desc=f"texts  [{model.spec.spec}]", unit="txt", disable=not progress,
                  dynamic_ncols=True) as bar:
            for group_start, group_stop in zip(starts, np.r_[starts[1:], len(missing)]):
                for start in range(group_start, group_stop, batch_size):
                    batch = missing[start:min(start + batch_size, group_stop)]
                    rows = unit_text[batch]
                    embeddings = model.encode_tokens(tokens.rows(rows, int(width[start])), tokens.lengths[rows]).numpy()
                    if matrix is None:
                        matrix = np.full((len(keys), embeddings.shape[1]), np.nan, dtype=np.float32)
                    matrix[batch] = embeddings
                    store.add([keys[u] for u in batch], embeddings)
                    bar.update(len(batch))
        store.flush()
    return matrix if matrix is not None else np.zeros((0, 1), np.float32)


def rowwise_dot(left, left_rows, right, right_rows, chunk: int = 1 << 16):
    """dot(left[left_rows[k]], right[right_rows[k]]) for every k, in chunks (float32)."""
    import numpy as np

    out = np.empty(len(left_rows), dtype=np.float32)
    for start in range(0, len(left_rows), chunk):
        stop = start + chunk
        out[start:stop] = np.einsum("ij,ij->i", left[left_rows[start:stop]], right[right_rows[start:stop]])
    return out


@dataclass
class Scores:
    """One model's scores over a plan. `caption_score[c]` = cos(image, caption c);
    `pair_score[p]` = cos(image, variant p); `pair_base[p]` = its caption's score.
    `pair_valid`/`record_valid` drop records whose image failed or that have no caption."""
    plan: PairPlan
    caption_score: Any
    pair_score: Any
    pair_base: Any
    pair_record: Any
    pair_valid: Any
    record_valid: Any
    image_embeddings: Any
    text_embeddings: Any
    caption_unit: Any
    pair_unit: Any
    tokens: TokenTable
    failures: Dict[int, str]

    def pair_text_cosine(self):
        """cos(text(caption), text(variant)) per pair, from the same text tower."""
        return rowwise_dot(self.text_embeddings, self.caption_unit[self.plan.pair_caption],
                           self.text_embeddings, self.pair_unit)

    def num_samples(self) -> int:
        return int(self.record_valid.sum())


def text_units(plan: PairPlan, tokens: TokenTable, longest_padding: bool):
    """(caption_unit, pair_unit, unit_text, unit_width). Normally a unit is a text. With
    longest padding (the release's SigLIP batches), a unit is a text at the width of the
    longest text of its group, since the padding changes the embedding."""
    import numpy as np

    if not longest_padding:
        return plan.caption_text, plan.pair_text, np.arange(len(plan.texts)), np.zeros(len(plan.texts), np.int64)
    group_width = np.zeros(plan.num_groups, dtype=np.int64)
    np.maximum.at(group_width, plan.caption_group, tokens.lengths[plan.caption_text])
    np.maximum.at(group_width, plan.pair_group, tokens.lengths[plan.pair_text])
    width_span = int(tokens.full_width) + 1
    caption_code = plan.caption_text * width_span + group_width[plan.caption_group]
    pair_code = plan.pair_text * width_span + group_width[plan.pair_group]
    unit_codes, inverse = np.unique(np.concatenate([caption_code, pair_code]), return_inverse=True)
    caption_unit, pair_unit = inverse[: len(caption_code)], inverse[len(caption_code):]
    return caption_unit, pair_unit, unit_codes // width_span, unit_codes % width_span


def score_plan(model: VisionLanguageModel, plan: PairPlan, cache_dir: Optional[str], batch_size: int,
               text_batch_size: int, workers: int, shard_rows: int, timings: Dict[str, float],
               progress: bool = True) -> Scores:
    """Encode what the plan needs (through the cache) and score every caption and pair."""
    import numpy as np

    folder, keyed_settings = cache_folder(cache_dir, model.spec.tag, {**model.settings(), "device": model.device.split(":")[0]})
    started = time.perf_counter()
    image_store = ShardStore(folder, "images", shard_rows, keyed_settings)
    image_embeddings, failures = encode_images(model, plan.images, image_store, batch_size, workers, progress)
    timings["images"] = time.perf_counter() - started
    if plan.images and len(failures) == len(plan.images):
        first_index, first_reason = min(failures.items())
        raise InputError(f"{plan.images[first_index]}: none of the {len(plan.images)} images could be read "
                         f"(first: {first_reason}); is image_path relative to the JSONL's folder?")

    started = time.perf_counter()
    tokens = tokenize_all(model, plan.texts, progress=progress)
    longest = getattr(model, "padding", "max_length") == "longest"
    caption_unit, pair_unit, unit_text, unit_width = text_units(plan, tokens, longest)
    text_store = ShardStore(folder, "texts", shard_rows, keyed_settings)
    text_embeddings = encode_text_units(model, plan.texts, tokens, unit_text, unit_width, text_store,
                                        text_batch_size, progress)
    timings["texts"] = time.perf_counter() - started

    started = time.perf_counter()
    image_ok = np.ones(len(plan.images), dtype=bool)
    image_ok[list(failures)] = False
    has_caption = np.bincount(plan.caption_record, minlength=plan.num_records) > 0
    record_valid = image_ok[plan.record_image] & has_caption
    caption_image = plan.record_image[plan.caption_record]
    caption_score = rowwise_dot(image_embeddings, caption_image, text_embeddings, caption_unit)
    pair_record = plan.caption_record[plan.pair_caption]
    pair_score = rowwise_dot(image_embeddings, plan.record_image[pair_record], text_embeddings, pair_unit)
    timings["scores"] = time.perf_counter() - started
    return Scores(plan, caption_score, pair_score, caption_score[plan.pair_caption], pair_record,
                  record_valid[pair_record], record_valid, image_embeddings, text_embeddings, caption_unit, pair_unit,
                  tokens, failures)


# ---------------------------------------------------------------------------
# Metrics: pooled means over pairs, bootstrap intervals over images
# ---------------------------------------------------------------------------

def mean_or_none(values) -> Optional[float]:
    """The mean as a float, None for no values (the release's convention)."""
    return float(values.astype("float64").mean()) if len(values) else None


def gap_summary(gaps) -> Dict[str, Any]:
    """{gap_mean, pos_rate, count} as the release writes them for a set of gaps."""
    return {"gap_mean": mean_or_none(gaps), "pos_rate": mean_or_none(gaps > 0) if len(gaps) else None,
            "count": int(len(gaps))}


class Bootstrap:
    """95% percentile intervals for pooled means, resampling images (records) with
    replacement. Register each metric's per-pair values and records; `intervals()`
    computes all of them from the same resamples, as matrix products."""

    def __init__(self, num_records: int, resamples: int, seed: int):
        self.num_records, self.resamples, self.seed = num_records, resamples, seed
        self.names: List[str] = []
        self._sums: List[Any] = []
        self._counts: List[Any] = []

    def add(self, name: str, values, records, weights=None) -> None:
        """Register the pooled mean of `values` (weighted by `weights` when given) over
        pairs belonging to `records` (compact record numbers)."""
        import numpy as np

        weights = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
        self.names.append(name)
        self._sums.append(np.bincount(records, weights=weights * values.astype(np.float64), minlength=self.num_records))
        self._counts.append(np.bincount(records, weights=weights, minlength=self.num_records))

    def intervals(self, chunk: int = 100) -> Dict[str, Optional[List[float]]]:
        import numpy as np

        if not self.resamples or not self.names or not self.num_records:
            return {}
        sums, counts = np.stack(self._sums, axis=1), np.stack(self._counts, axis=1)
        rng = np.random.default_rng(self.seed)
        stats = []
        for start in range(0, self.resamples, chunk):
            size = min(chunk, self.resamples - start)
            draws = rng.integers(0, self.num_records, size=(size, self.num_records))
            weights = np.stack([np.bincount(row, minlength=self.num_records) for row in draws]).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                stats.append((weights @ sums) / (weights @ counts))
        stats = np.concatenate(stats)
        result = {}
        for column, name in enumerate(self.names):
            finite = stats[:, column][np.isfinite(stats[:, column])]
            result[name] = [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))] if len(finite) else None
        return result


def record_ids(scores: Scores, mask):
    """Compact record numbers (0..valid records-1) of the masked pairs, for Bootstrap."""
    import numpy as np

    compact = np.cumsum(scores.record_valid) - 1
    return compact[scores.pair_record[mask]]


def trivially_invariant_pairs(scores: Scores, mask) -> int:
    """How many masked pairs tokenise to exactly the caption's token ids."""
    plan = scores.plan
    return int(scores.tokens.same_ids(plan.caption_text[plan.pair_caption[mask]], plan.pair_text[mask]).sum())


def run_facts(scores: Scores, paraphrase_mask) -> Dict[str, Any]:
    """What every metric JSON reports beside the metrics: skipped images, truncated
    texts, paraphrases that tokenise to the caption itself."""
    import numpy as np

    plan = scores.plan
    skipped = sorted(scores.failures.items())
    used_texts = np.unique(np.concatenate([plan.caption_text[scores.record_valid[plan.caption_record]],
                                           plan.pair_text[scores.pair_valid]]))
    return {
        "num_skipped_images": len(skipped),
        "skipped_images": [{"image_path": plan.images[i], "line": plan.image_lines[i], "reason": reason}
                           for i, reason in skipped[:20]],
        "num_truncated_texts": int(scores.tokens.truncated[used_texts].sum()),
        "num_trivially_invariant_pairs": trivially_invariant_pairs(scores, paraphrase_mask & scores.pair_valid),
    }


RETRIEVAL_KS = (1, 5, 10)


def retrieval_recalls(scores: Scores, ks: Sequence[int] = RETRIEVAL_KS, max_chunk_cells: int = 1 << 22) -> Dict[str, Any]:
    """Standard retrieval over the evaluated images and their original captions:
    image->text recall@k (a hit when any of the image's captions ranks in the top k) and
    text->image recall@k (a hit when the caption's own image does). A candidate counts
    above the ground truth only when it scores strictly higher. Computed in chunks from
    the embeddings, so memory stays bounded."""
    import numpy as np

    plan = scores.plan
    valid_captions = np.flatnonzero(scores.record_valid[plan.caption_record])
    if not len(valid_captions):
        return {}
    compact = np.cumsum(scores.record_valid) - 1
    caption_owner = compact[plan.caption_record[valid_captions]]  # ascending: a record's captions are contiguous
    caption_embeddings = scores.text_embeddings[scores.caption_unit[valid_captions]]
    image_embeddings = scores.image_embeddings[plan.record_image[scores.record_valid]]
    first_caption = np.searchsorted(caption_owner, np.arange(len(image_embeddings)))

    def ranks(queries, candidates, truth_of):
        """How many candidates score strictly above each query's ground truth, the truth
        read from the same similarity matrix (so a candidate never beats itself)."""
        out = np.empty(len(queries), dtype=np.int64)
        step = max(1, max_chunk_cells // max(1, len(candidates)))
        for start in range(0, len(queries), step):
            similarity = queries[start:start + step] @ candidates.T
            truth = truth_of(similarity, np.arange(start, start + len(similarity)))
            out[start:start + step] = (similarity > truth[:, None]).sum(axis=1)
        return out

    def best_own_caption(similarity, images):
        per_record = np.maximum.reduceat(similarity, first_caption, axis=1)
        return per_record[np.arange(len(images)), images]

    def own_image(similarity, captions):
        return similarity[np.arange(len(captions)), caption_owner[captions]]

    image_ranks = ranks(image_embeddings, caption_embeddings, best_own_caption)
    text_ranks = ranks(caption_embeddings, image_embeddings, own_image)
    return {
        "image_to_text": {f"R@{k}": float((image_ranks < k).mean()) for k in ks},
        "text_to_image": {f"R@{k}": float((text_ranks < k).mean()) for k in ks},
        "num_images": int(len(image_embeddings)), "num_captions": int(len(caption_embeddings)),
    }


class PairDump:
    """`--dump-pairs PATH`: one row per scored pair, for every model of the run, in one
    file: CSV (gzip when PATH ends in .gz) or Parquet (PATH ends in .parquet; needs
    pyarrow). Written to a temporary file and renamed when the run completes."""

    COLUMNS = ["model_tag", "line", "image_id", "image_path", "caption_index", "caption", "variant_kind",
               "variant_text", "base_score", "variant_score", "gap"]

    def __init__(self, path: str):
        self.path = path
        self.parquet = path.endswith(".parquet")
        if self.parquet:
            import importlib.util

            if importlib.util.find_spec("pyarrow") is None:
                raise InputError(f"--dump-pairs {path}: Parquet needs pyarrow (pip install pyarrow); "
                                 f"or name a .csv or .csv.gz file")
        self._stack = contextlib.ExitStack()
        self._writer = None

    def __enter__(self):
        import csv
        import gzip

        handle = self._stack.enter_context(atomic_output(self.path, "wb"))
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = [pa.string(), pa.int64(), pa.string(), pa.string(), pa.int64(), pa.string(), pa.string(),
                     pa.string(), pa.float32(), pa.float32(), pa.float32()]
            self._schema = pa.schema(list(zip(self.COLUMNS, types)))
            self._writer = self._stack.enter_context(pq.ParquetWriter(handle, self._schema))
        else:
            binary = self._stack.enter_context(gzip.GzipFile(fileobj=handle, mode="wb", mtime=0)) \
                if self.path.endswith(".gz") else handle
            import io

            text = self._stack.enter_context(io.TextIOWrapper(binary, encoding="utf-8", newline=""))
            self._writer = csv.writer(text)
            self._writer.writerow(self.COLUMNS)
        return self

    def __exit__(self, *exc_info):
        return self._stack.__exit__(*exc_info)

    def write(self, scores: Scores, model_tag: str) -> int:
        """Append the model's valid pairs; returns how many rows were written."""
        import numpy as np

        plan = scores.plan
        pairs = np.flatnonzero(scores.pair_valid)
        records = scores.pair_record[pairs]
        captions = plan.pair_caption[pairs]
        texts = np.asarray(plan.texts, dtype=object)
        columns = {
            "model_tag": np.full(len(pairs), model_tag, dtype=object),
            "line": plan.record_line[records],
            "image_id": np.asarray(plan.record_image_id, dtype=object)[records],
            "image_path": np.asarray(plan.images, dtype=object)[plan.record_image[records]],
            "caption_index": plan.caption_index[captions],
            "caption": texts[plan.caption_text[captions]],
            "variant_kind": np.asarray(plan.kinds, dtype=object)[plan.pair_kind[pairs]],
            "variant_text": texts[plan.pair_text[pairs]],
            "base_score": scores.pair_base[pairs],
            "variant_score": scores.pair_score[pairs],
            "gap": scores.pair_base[pairs] - scores.pair_score[pairs],
        }
        if self.parquet:
            import pyarrow as pa

            self._writer.write_table(pa.table({name: columns[name] for name in self.COLUMNS}, schema=self._schema))
        else:
            self._writer.writerows(zip(*(columns[name].tolist() for name in self.COLUMNS)))
        return len(pairs)


# ---------------------------------------------------------------------------
# The shared command line and the per-model loop of the evaluation scripts
# ---------------------------------------------------------------------------

def default_workers() -> int:
    """DataLoader workers: the CPU count, at most 8 (decoding JPEGs rarely needs more)."""
    return max(1, min(8, os.cpu_count() or 1))


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
    return parser


def output_base(args) -> str:
    """`<output dir>/<input stem>`: metric file names start with it, as in the release."""
    stem = os.path.splitext(os.path.basename(args.input))[0]
    return os.path.join(args.output_dir or os.path.dirname(os.path.abspath(args.input)), stem)


def run_config(args, model: VisionLanguageModel, input_sha256: str, timings: Dict[str, float], script: str) -> Dict[str, Any]:
    """The `config` block: everything needed to know how a metric file was made."""
    return {
        "script": script, "spec": model.spec.spec, "model_tag": model.spec.tag, "backend": model.backend,
        "model_settings": model.settings(), "precision": args.precision, "device": model.device,
        "input": os.path.abspath(args.input), "input_sha256": input_sha256, "limit": args.limit,
        "bootstrap_resamples": args.bootstrap, "seed": args.seed, "batch_size": args.batch_size,
        "text_batch_size": args.text_batch_size, "workers": args.workers,
        "cache": None if args.no_cache else os.path.abspath(args.cache_dir), "versions": library_versions(),
        "timings_seconds": {name: round(seconds, 3) for name, seconds in timings.items()},
    }


def evaluate(args, variant_groups, compute_metrics, script: str):
    """The recipe every evaluation script shares: read the plan once, then per model
    load, encode through the cache, score, compute metrics (`compute_metrics(scores,
    bootstrap)` returns the metric dict), attach the facts and config. Yields one metric
    dict per model, in order."""
    started = time.perf_counter()
    if args.cache_dir is None:
        args.cache_dir = os.path.join(os.path.dirname(os.path.abspath(args.input)), ".lgip_cache")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit {args.limit}: expected at least 1")
    specs = [parse_spec(spec) for spec in args.models]  # a typo fails before any work
    plan = build_plan(args.input, variant_groups, args.limit)
    input_sha256 = file_sha256(args.input)
    read_seconds = time.perf_counter() - started
    device = resolve_device(args.device)
    with (PairDump(args.dump_pairs) if args.dump_pairs else contextlib.nullcontext()) as dump:
        for spec in specs:
            yield evaluate_model(args, spec, plan, device, read_seconds, input_sha256, compute_metrics, script, dump)
    if args.dump_pairs:
        print(f"wrote {args.dump_pairs} (one row per scored pair)")


def evaluate_model(args, spec: ModelSpec, plan: PairPlan, device: str, read_seconds: float, input_sha256: str,
                   compute_metrics, script: str, dump: Optional[PairDump]) -> Dict[str, Any]:
    """One model's metric dict: load, encode through the cache, score, measure."""
    timings = {"read_input": read_seconds}
    started = time.perf_counter()
    model = load_model(spec, device, args.precision, args.siglip_padding)
    timings["load_model"] = time.perf_counter() - started
    scores = score_plan(model, plan, None if args.no_cache else args.cache_dir, args.batch_size,
                        args.text_batch_size, args.workers, args.cache_shard_rows, timings, not args.quiet)
    if scores.failures:
        first_index, first_reason = sorted(scores.failures.items())[0]
        message = (f"{where(args.input, plan.image_lines[first_index])}: image {plan.images[first_index]} "
                   f"could not be read ({first_reason})")
        if args.strict:
            raise InputError(message + f"; {len(scores.failures)} image(s) failed in all")
        print(f"warning: {message}; {len(scores.failures)} image(s) skipped with their records "
              f"(--strict makes this an error)", file=sys.stderr)
    if not scores.record_valid.any():
        raise InputError(f"{args.input}: no record has a readable image and a caption")
    started = time.perf_counter()
    bootstrap = Bootstrap(scores.num_samples(), args.bootstrap, args.seed)
    metrics = {"model_tag": spec.tag, **compute_metrics(scores, bootstrap)}
    metrics["ci95"] = bootstrap.intervals()
    metrics.update(run_facts(scores, plan.pairs_of("same")))
    timings["metrics"] = time.perf_counter() - started
    if dump is not None:
        started = time.perf_counter()
        dump.write(scores, spec.tag)
        timings["dump_pairs"] = time.perf_counter() - started
    metrics["config"] = run_config(args, model, input_sha256, timings, script)
    return metrics


def metric_value(metrics: Dict[str, Any], name: str) -> Any:
    """`metrics[name]`, or for a dotted name as the intervals use (`triples.brittleness`)
    the nested value; None when absent."""
    if name in metrics:
        return metrics[name]
    value: Any = metrics
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def print_metrics(metrics: Dict[str, Any], keys: Sequence[str]) -> None:
    """The headline numbers of one model (top-level or dotted names), with their
    intervals, as a few lines."""
    print(f"\n=== {metrics['model_tag']} ({metrics['num_samples']} images) ===")
    intervals = metrics.get("ci95", {})
    for key in keys:
        value = metric_value(metrics, key)
        interval = intervals.get(key)
        shown = "None" if value is None else f"{value:.6f}"
        if interval:
            shown += f"  [95% CI {interval[0]:.6f}, {interval[1]:.6f}]"
        print(f"  {key}: {shown}")
    timings = metrics["config"]["timings_seconds"]
    print("  seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items()))


def write_metric_file(path: str, payload: Any) -> None:
    """Write a metric JSON atomically and say where it went (and whether it replaced one)."""
    replaced = os.path.exists(path)
    write_json(path, payload)
    print(f"{'replaced' if replaced else 'wrote'} {path}")
