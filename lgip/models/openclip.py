"""The open_clip backend: CLIP, OpenCLIP and EVA02-CLIP models built through open_clip's
own factory, with its tokenizer and preprocessing. Text towers that are causal and pool
at the end token are encoded at each batch's own length (exact, no padding work), or
with shared prefixes computed once (`prefix_sharing`, on by default).
"""
from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import List

import numpy as np
import open_clip
import torch
import torchvision.transforms as T
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import text_global_pool

from lgip.io import InputError
from lgip.models.base import TORCH_DTYPES, TokenBatch, VisionLanguageModel, unit_rows, weights_fingerprint
from lgip.models.word_tokens import WordMemoTokenizer
from lgip.models.spec import ModelSpec


# What open_clip logs (it does not raise) when a local-dir:/hf-hub: model has no weights.
NO_WEIGHTS_LOG = ("no CLIP weights found", "Could not find/download default weights")


@contextlib.contextmanager
def _open_clip_log():
    """The warnings open_clip logs while the block runs, as a list of messages (they
    are shown by the caller, or turned into an error)."""
    messages: List[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield messages
    finally:
        root.removeHandler(handler)


class OpenClipModel(VisionLanguageModel):
    """An open_clip model (CLIP, EVA02-CLIP, ...), built through open_clip's own factory."""

    backend = "openclip"

    def __init__(self, spec: ModelSpec, device: str, precision: str, prefix_sharing: bool = True, **_options):
        self.spec, self.device, self.precision = spec, device, precision
        pretrained = None if spec.random_weights else spec.pretrained
        with warnings.catch_warnings(record=True) as caught, _open_clip_log() as log:
            warnings.simplefilter("always")
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=pretrained)
                self.tokenizer = open_clip.get_tokenizer(spec.name)
            except (RuntimeError, ValueError, FileNotFoundError, OSError) as err:
                raise InputError(f"model {spec.spec}: open_clip could not load it: {err}") from None
        for message in log:
            if any(sign in message for sign in NO_WEIGHTS_LOG) and not spec.random_weights:
                raise InputError(f"model {spec.spec}: open_clip found no weights for it ({message}), so it would "
                                 f"evaluate random ones; add @random if that is what you want")
            print(f"warning: {spec.spec}: {message}", file=sys.stderr)
        self.quick_gelu_mismatch = False
        for warning in caught:
            text = str(warning.message)
            if "QuickGELU" in text:
                self.quick_gelu_mismatch = True
                print(f"warning: {spec.spec}: {text} The weights were trained with QuickGELU; "
                      f"the '-quickgelu' model name builds it that way (see README).", file=sys.stderr)
        self.model = model.to(device=device, dtype=TORCH_DTYPES[precision]).eval()
        self.preprocess = preprocess
        # The same preprocessing without its last step, so pixels stay in [0, 1].
        self._normalize = next(step for step in preprocess.transforms if isinstance(step, T.Normalize))
        self._to_pixels = T.Compose([step for step in preprocess.transforms if step is not self._normalize])
        self.context_length = int(getattr(self.tokenizer, "context_length", 77))
        # Exact trimming needs causal attention, pooling at the end token, and pad id 0
        # after the text: then nothing before the end token ever sees the padding.
        self.trims_padding = (isinstance(model, open_clip.model.CLIP) and model.attn_mask is not None
                              and getattr(model, "text_pool_type", "argmax") == "argmax"
                              and isinstance(self.tokenizer, SimpleTokenizer))
        # The same ids as the tokenizer's, several times faster on LGIP's texts (word_tokens.py).
        words = WordMemoTokenizer(self.tokenizer) if isinstance(self.tokenizer, SimpleTokenizer) else None
        self._words = words if words is not None and words.applies else None
        self.weights = weights_fingerprint(self.model)
        self.use_prefix_sharing(prefix_sharing)

    def settings(self):
        return {
            "backend": self.backend, "spec": self.spec.spec, "weights_fingerprint": self.weights,
            "image_preprocess": repr(self.preprocess), "tokenizer": type(self.tokenizer).__name__,
            "context_length": self.context_length, "padding": "trimmed after the longest text (exact)"
            if self.trims_padding else f"max_length ({self.context_length})",
            "quick_gelu_mismatch": self.quick_gelu_mismatch, **self.precision_settings(), **self.prefix_settings(),
        }

    def text_width(self):
        return self.context_length

    def image_transform(self, image):
        return self.preprocess(image)

    def to_pixels(self, image):
        return self._to_pixels(image)

    def pixel_mean_std(self):
        return self._normalize.mean, self._normalize.std

    def image_tower(self, normalized):
        return self.model.encode_image(normalized)

    def tokenize(self, texts):
        if self._words is not None:
            ids, lengths, truncated = self._words.batch(texts, self.context_length)
            return TokenBatch(torch.from_numpy(ids), lengths, truncated)
        ids = self.tokenizer(texts)
        nonzero = (ids != 0).numpy()
        lengths = np.where(nonzero.any(1), self.context_length - np.argmax(nonzero[:, ::-1], axis=1), 0)
        full = lengths >= self.context_length
        truncated = np.zeros(len(texts), dtype=bool)
        for row in np.flatnonzero(full):  # a full row may be exactly full or cut: count the BPE tokens
            truncated[row] = len(self.tokenizer.encode(texts[row])) + 2 > self.context_length
        return TokenBatch(ids, lengths.astype(np.int64), truncated)

    def encode_tokens(self, ids, lengths):
        with torch.no_grad(), self.autocast():
            ids = self.to_device(ids)
            if not self.trims_padding or ids.shape[1] == self.context_length:
                return unit_rows(self.model.encode_text(ids))
            return unit_rows(self._encode_text_trimmed(ids))

    def _encode_text_trimmed(self, ids):
        """open_clip's CLIP.encode_text on a sequence shorter than the context: the
        positional embedding and causal mask cut to its width."""
        model = self.model
        width = ids.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(ids).to(cast_dtype) + model.positional_embedding[:width].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:width, :width])
        x = model.ln_final(x)
        x = text_global_pool(x, ids, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        if model.text_projection is not None:
            x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
        return x
