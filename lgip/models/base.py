"""What every model backend offers the rest of the toolkit, and the pieces they share.

A backend turns a spec into a model object with two paths to an image embedding: the
cached, no-grad path the evaluation engine uses (`image_transform` in DataLoader
workers, then `encode_images`), and a differentiable path for probes that work on
pixels (`to_pixels`, `normalize_pixels`, `encode_pixels`, `image_features`). Texts go in
as strings (`text_features`) or as token rows the engine batches (`tokenize`,
`encode_tokens`), or as each text's own token ids (`encode_token_rows`), which causal
towers that pool at the end token encode with shared prefixes computed once.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Dict, List, Optional

import torch

from lgip.models.spec import ModelSpec

# The dtype of the weights for each precision; `amp` keeps fp32 weights and autocasts.
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}
# What `amp` autocasts to, per device type (CPU autocast supports bfloat16).
AUTOCAST_DTYPES = {"cuda": torch.float16, "mps": torch.float16, "cpu": torch.bfloat16}


def weights_fingerprint(module) -> str:
    """A fingerprint of a model's weights that costs one pass over them: names, shapes,
    the sum of each tensor and its first and last values. Two different checkpoints of
    one architecture get different fingerprints."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
            if flat.numel():
                edge = torch.cat([flat[:64], flat[-64:]]).to(torch.float64).cpu().numpy().tobytes()
                digest.update(edge + repr(float(flat.sum(dtype=torch.float64))).encode())
    return digest.hexdigest()[:32]


def unit_rows(features) -> torch.Tensor:
    """float32 CPU rows scaled to unit length: how every embedding leaves a model."""
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


class TokenBatch:
    """Tokenised texts, padded to the model's full text length: `ids` [N, L] int64,
    `lengths` (tokens up to and including the end token), `truncated` (the text did
    not fit)."""

    def __init__(self, ids, lengths, truncated):
        self.ids, self.lengths, self.truncated = ids, lengths, truncated


class VisionLanguageModel:
    """The contract of a backend. A subclass sets `spec`, `device`, `precision`, `model`
    (the torch module, in eval mode) and implements the methods that
    raise NotImplementedError; the rest is built on them. Embeddings from `encode_*` and
    `text_features` are L2-normalised float32 CPU tensors; `encode_pixels` and
    `image_features` return raw features on the model's device. Parameters keep
    `requires_grad` as loaded: freezing them switches PyTorch to other attention
    kernels, which moves embeddings by about 3e-7 and would change cached results."""

    backend = ""
    trims_padding = False  # True where dropping padding after the longest text is exact
    prefix_sharing = False  # True where encode_token_rows computes each distinct prefix once
    pad_id = 0
    spec: ModelSpec
    device: str
    precision: str

    def settings(self) -> Dict[str, Any]:
        """Everything about preprocessing and tokenisation that changes an embedding."""
        raise NotImplementedError

    def precision_settings(self) -> Dict[str, Any]:
        """The precision, and under `amp` what autocast computes in (only then, so the
        cache keys of the other precisions stay as they were)."""
        if self.precision != "amp":
            return {"precision": self.precision}
        return {"precision": self.precision, "autocast_dtype": str(AUTOCAST_DTYPES[self.device_type]).split(".")[-1]}

    def use_prefix_sharing(self, wanted: bool) -> None:
        """Turn prefix-shared text encoding on where `wanted` and the tower qualifies
        (causal, pooling at the end token: CLIP, OpenCLIP, EVA02; not SigLIP)."""
        from lgip.models.prefix import supports_prefix_sharing

        self.prefix_sharing = bool(wanted) and supports_prefix_sharing(self.model)

    def prefix_settings(self) -> Dict[str, Any]:
        """`prefix_sharing` where it is on (only then, so that the cache keys of models
        that encode as before stay as they were: it moves embeddings by about 3e-7)."""
        return {"prefix_sharing": True} if self.prefix_sharing else {}

    def loaded(self) -> "VisionLanguageModel":
        """The model itself (a stand-in built from the cache's records loads it here)."""
        return self

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    def autocast(self):
        """The context the towers run in: autocast under `amp`, nothing otherwise."""
        if self.precision != "amp":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=AUTOCAST_DTYPES[self.device_type])

    def to_device(self, tensor, dtype=None):
        """`tensor` on the model's device; the copy overlaps with compute from pinned memory."""
        return tensor.to(device=self.device, dtype=dtype, non_blocking=True)

    # --- images -----------------------------------------------------------------
    def image_transform(self, image):
        """PIL image -> the model-normalised tensor the image tower takes, exactly as the
        model's own preprocessing makes it (picklable: DataLoader workers run it)."""
        raise NotImplementedError

    def to_pixels(self, image) -> torch.Tensor:
        """PIL image -> float tensor [3, H, W] in [0, 1]: resized and cropped, not normalised."""
        raise NotImplementedError

    def pixel_mean_std(self):
        """(mean, std) per channel, as the model normalises pixels."""
        raise NotImplementedError

    def image_tower(self, normalized) -> torch.Tensor:
        """The image tower's raw output for model-normalised pixels already on the device."""
        raise NotImplementedError

    def normalize_pixels(self, pixels) -> torch.Tensor:
        """[.., 3, H, W] pixels in [0, 1] -> model-normalised, as a differentiable step."""
        mean, std = (torch.as_tensor(values, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
                     for values in self.pixel_mean_std())
        return (pixels - mean) / std

    def encode_pixels(self, normalized, grad: bool = False) -> torch.Tensor:
        """Raw (not L2-normalised) float32 image features on the model's device for a
        batch of model-normalised pixels; gradients flow to the input when `grad`."""
        with torch.set_grad_enabled(grad), self.autocast():
            return self.image_tower(self.to_device(normalized, TORCH_DTYPES[self.precision])).float()

    def image_features(self, pixels, grad: bool = False) -> torch.Tensor:
        """Raw image features for [N, 3, H, W] pixels in [0, 1] (see `encode_pixels`)."""
        return self.encode_pixels(self.normalize_pixels(pixels), grad=grad)

    def encode_images(self, normalized) -> torch.Tensor:
        """Unit embeddings of a batch from `image_transform`, without gradients."""
        return unit_rows(self.encode_pixels(normalized))

    # --- texts ------------------------------------------------------------------
    def tokenize(self, texts: List[str]) -> TokenBatch:
        raise NotImplementedError

    def encode_tokens(self, ids, lengths) -> torch.Tensor:
        """Unit embeddings of a batch of token rows already cut to the width the caller chose."""
        raise NotImplementedError

    def encode_token_rows(self, token_rows) -> torch.Tensor:
        """Unit embeddings of texts given as their own token ids (each up to and
        including its end token, no padding), in order. With `prefix_sharing` each
        distinct prefix of the rows is computed once (sorted rows share the most);
        otherwise the rows are padded to the model's width and encoded in one batch."""
        if not self.prefix_sharing:
            width = max(map(len, token_rows)) if self.trims_padding else self.text_width()
            ids = torch.full((len(token_rows), width), self.pad_id, dtype=torch.int64)
            for row, tokens in enumerate(token_rows):
                ids[row, :len(tokens)] = torch.as_tensor(tokens)
            return self.encode_tokens(ids, torch.as_tensor([len(tokens) for tokens in token_rows]))
        from lgip.models.prefix import encode_prefix_shared

        with torch.no_grad(), self.autocast():
            return encode_prefix_shared(self.model, token_rows)

    def text_width(self) -> int:
        """The number of token positions every text is padded to."""
        raise NotImplementedError

    def text_features(self, texts: List[str]) -> torch.Tensor:
        """Unit embeddings of a few texts (prompts, class names), at the model's full padding."""
        tokens = self.tokenize(list(texts))
        return self.encode_tokens(tokens.ids, tokens.lengths)

    # --- scores -----------------------------------------------------------------
    def logit_scale(self) -> float:
        """The learned temperature that multiplies cosine similarities."""
        return float(self.model.logit_scale.detach().exp())

    def logit_bias(self) -> Optional[float]:
        """SigLIP's learned bias added to the scaled similarity; None for CLIP."""
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else float(bias.detach())
