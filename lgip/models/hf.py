"""The transformers backend: SigLIP, SigLIP2 and CLIP dual encoders through AutoModel,
with their own tokenizer and image processor. SigLIP reads its padding (it pools the
last position), so its texts are padded to `max_length` as trained, or to the longest
text of a group for the release's behaviour. CLIP's causal tower encodes with shared
prefixes computed once (`prefix_sharing`, on by default).
"""
from __future__ import annotations

import contextlib

import huggingface_hub.utils as hub_bars
import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from lgip.io import InputError
from lgip.models.base import TORCH_DTYPES, TokenBatch, VisionLanguageModel, unit_rows, weights_fingerprint
from lgip.models.spec import ModelSpec


class HFImageTransform:
    """A transformers image processor as a picklable PIL -> tensor function; extra
    keyword arguments go to the processor (`do_normalize=False` keeps [0, 1] pixels)."""

    def __init__(self, processor, **options):
        self.processor, self.options = processor, options

    def __call__(self, image):
        return self.processor(images=image, return_tensors="pt", **self.options)["pixel_values"][0]


def _features(output):
    """transformers 4.x returns a tensor from get_*_features, 5.x a model output."""
    return output if hasattr(output, "dim") else output.pooler_output


@contextlib.contextmanager
def _progress_bars(shown: bool):
    """transformers' and huggingface_hub's own bars (loading weights, downloads) off
    for the block unless `shown`; as they were afterwards."""
    if shown:
        yield
        return
    transformers_bars, hub_bars_on = hf_logging.is_progress_bar_enabled(), not hub_bars.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    hub_bars.disable_progress_bars()
    try:
        yield
    finally:
        if transformers_bars:
            hf_logging.enable_progress_bar()
        if hub_bars_on:
            hub_bars.enable_progress_bars()


class HFModel(VisionLanguageModel):
    """A transformers dual encoder (SigLIP, SigLIP2, CLIP) through AutoModel."""

    backend = "hf"

    def __init__(self, spec: ModelSpec, device: str, precision: str, siglip_padding: str = "max_length",
                 prefix_sharing: bool = True, progress: bool = True, **_options):
        self.spec, self.device, self.precision = spec, device, precision
        try:
            with _progress_bars(progress):
                model = AutoModel.from_pretrained(spec.name)
                self.tokenizer = AutoTokenizer.from_pretrained(spec.name)
                self.image_processor = AutoImageProcessor.from_pretrained(spec.name)
        except (OSError, ValueError) as err:
            raise InputError(f"model {spec.spec}: transformers could not load it: {err}") from None
        self.model = model.to(device=device, dtype=TORCH_DTYPES[precision]).eval()
        text_config = getattr(model.config, "text_config", model.config)
        self.max_length = int(getattr(text_config, "max_position_embeddings", 64))
        self.is_siglip = "siglip" in model.config.model_type
        # SigLIP pools the last position, so padding is part of what it reads; it was
        # trained with every text padded to max_length. "longest" is the release's choice.
        self.padding = siglip_padding if self.is_siglip else "max_length"
        self.uses_attention_mask = "attention_mask" in self.tokenizer.model_input_names
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.weights = weights_fingerprint(self.model)
        self.use_prefix_sharing(prefix_sharing)

    def settings(self):
        return {
            "backend": self.backend, "spec": self.spec.spec, "model_type": self.model.config.model_type,
            "weights_fingerprint": self.weights, "image_processor": type(self.image_processor).__name__,
            "image_preprocess": repr(self.image_processor.to_dict()),
            "tokenizer": type(self.tokenizer).__name__, "max_length": self.max_length, "padding": self.padding,
            "attention_mask": self.uses_attention_mask, **self.precision_settings(), **self.prefix_settings(),
        }

    def text_width(self):
        return self.max_length

    def image_transform(self, image):
        return HFImageTransform(self.image_processor)(image)

    def to_pixels(self, image):
        return HFImageTransform(self.image_processor, do_normalize=False)(image)

    def pixel_mean_std(self):
        return self.image_processor.image_mean, self.image_processor.image_std

    def image_tower(self, normalized):
        return _features(self.model.get_image_features(pixel_values=normalized))

    def tokenize(self, texts):
        encoded = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                                 return_tensors="pt")
        ids = encoded["input_ids"]
        full_lengths = [len(row) for row in self.tokenizer(texts, truncation=False)["input_ids"]]
        lengths = np.minimum(np.asarray(full_lengths, dtype=np.int64), self.max_length)
        truncated = np.asarray(full_lengths) > self.max_length
        return TokenBatch(ids, lengths, truncated)

    def encode_tokens(self, ids, lengths):
        with torch.no_grad(), self.autocast():
            ids = self.to_device(ids)
            inputs = {"input_ids": ids}
            if self.uses_attention_mask:
                positions = torch.arange(ids.shape[1], device=ids.device)
                inputs["attention_mask"] = (positions[None, :] < torch.as_tensor(lengths, device=ids.device)[:, None]).long()
            return unit_rows(_features(self.model.get_text_features(**inputs)))
