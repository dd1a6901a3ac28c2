"""Tiny, random, offline models and data for the quickstart, the tests and the
benchmarks: an open_clip CLIP saved as a `local-dir:` folder, a transformers SigLIP
saved with save_pretrained beside a sentencepiece tokenizer trained on a few captions,
and images drawn with Pillow. Each builder returns the spec a user would type, and is
checked by loading it back through that spec. Nothing here downloads anything.
"""
from __future__ import annotations

import io
import random
import re
import string
from pathlib import Path
from typing import Any, Dict, List, Sequence

import sentencepiece as spm
import torch
from open_clip.model import CLIP
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer
from transformers.utils import logging as hf_logging

from lgip.io import write_json
from lgip.models import load_model

CAPTIONS: List[str] = [
    "A man riding a horse.",
    "Two dogs playing in the park.",
    "A red car parked on the street.",
    "A blue bus driving down the road.",
    "Three people standing next to a train.",
    "A cat sleeping on a green couch.",
    "A white bird sitting on a branch.",
    "Two boats floating on the water.",
    "A person riding a bicycle down the street.",
    "A yellow truck parked near a building.",
    "One black dog running on the beach.",
    "Four horses grazing in a field.",
    "A green train pulling into the station.",
    "A woman walking her dog in the park.",
    "Five birds flying over the lake.",
    "A small brown cat sitting on a table.",
    "Two red buses parked side by side.",
    "A man standing next to his blue car.",
    "A boy riding a red bicycle.",
    "A large white boat docked at the pier.",
    "Three cats playing with a ball.",
    "A person holding an orange umbrella.",
    "Two horses pulling a wooden cart.",
    "A yellow bus stopped at the corner.",
    "A dog catching a frisbee in the air.",
    "One person sitting on a bench.",
    "A black truck driving on the highway.",
    "Four people riding bicycles on a path.",
    "A brown horse standing in the snow.",
    "A blue bird perched on a fence.",
    "Two trains passing each other.",
    "A girl feeding a white horse.",
    "Five cars waiting at a red light.",
    "A cat looking out of a window.",
    "A man fixing his green truck.",
    "Three boats sailing on the sea.",
    "A dog sitting in the back of a car.",
    "A woman riding a brown horse on the beach.",
    "Two people standing by a yellow train.",
    "A gray cat lying on a bed.",
    "One red boat on a calm river.",
    "A group of people waiting for the bus.",
    "Four dogs running across the grass.",
    "A bird standing on the sand.",
    "A man riding a motorcycle past a truck.",
    "Two children flying a kite in the park.",
    "A purple bicycle leaning against a wall.",
    "Three white trucks parked in a row.",
    "A black and white cat on a chair.",
    "A person walking across the street.",
    "Five horses running in a field.",
    "A pink bus full of people.",
    "Two birds sitting on a wire.",
    "A green car driving through the city.",
    "One dog sleeping next to a cat.",
    "A train crossing a bridge over the river.",
    "A man and a woman riding horses.",
    "Three people on a small boat.",
    "A red truck carrying wood.",
    "A blue bicycle parked next to a tree.",
]

OPENCLIP_MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    # vocab 49408 and context 77: what the bundled SimpleTokenizer produces.
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

SIGLIP_MAX_LENGTH = 64
SIGLIP_SPM_VOCAB = 160  # a soft limit (hard_vocab_limit=False): ~60 captions may give fewer
# T5/SigLIP layout of the sentencepiece ids: <pad>=0, </s>=1, <unk>=2, no <bos>.
# SiglipTokenizer pads with "</s>", so pad and eos are both id 1, as in google/siglip-*.
SPM_PAD_ID, SPM_EOS_ID, SPM_UNK_ID = 0, 1, 2


def openclip_preprocess_cfg(image_size: int) -> Dict[str, Any]:
    """open_clip's preprocessing settings for a tiny model: OpenAI CLIP's mean and std."""
    return {"size": image_size, "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic", "resize_mode": "shortest"}


def build_tiny_openclip(folder, model_cfg: Dict[str, Any] = OPENCLIP_MODEL_CFG, half_weights: bool = True) -> str:
    """Build a random open_clip CLIP from `model_cfg` (by default 64-d embeddings, 32 px
    images, 2+2 layers) into `folder` as `open_clip_config.json` +
    `open_clip_model.safetensors`, check that it loads back through `local-dir:` and
    encodes on the CPU, and return the model spec `openclip:local-dir:FOLDER`. With
    `half_weights` the weights are stored in fp16 (about 7 MB for the default; the model
    loads them into fp32). get_tokenizer on the folder gives SimpleTokenizer(77)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = CLIP(**model_cfg)
    # safetensors refuses tensors that share storage and wants contiguous ones: clone each.
    state = {k: v.detach().to(torch.float16 if half_weights and v.is_floating_point() else v.dtype).contiguous().clone()
             for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    image_size = model_cfg["vision_cfg"]["image_size"]
    write_json(str(folder / "open_clip_config.json"),
               {"model_cfg": model_cfg, "preprocess_cfg": openclip_preprocess_cfg(image_size)})

    # Load it back the way a user would and make sure both towers run.
    spec = "openclip:local-dir:" + str(folder)
    loaded = load_model(spec)
    text = loaded.text_features(["a red dog"])
    image = loaded.encode_images(torch.zeros(1, 3, image_size, image_size))
    embed_dim = model_cfg["embed_dim"]
    if text.shape != (1, embed_dim) or image.shape != (1, embed_dim):
        raise RuntimeError(f"tiny open_clip model gave shapes {tuple(text.shape)}, {tuple(image.shape)}")
    return spec


def _canonical(text: str) -> str:
    """Lower-case, drop punctuation, squeeze spaces: what SiglipTokenizer does to a text
    before sentencepiece sees it, so the trained pieces match what it will be asked."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text).strip()


def build_tiny_siglip(folder, captions: Sequence[str] = CAPTIONS) -> str:
    """Build a random transformers SigLIP (32-d, 32 px images, 2+2 layers) into `folder`
    with save_pretrained, beside a sentencepiece SiglipTokenizer trained on `captions`
    (pad = eos = "</s>" = id 1, unk = id 2, max length 64) and a 32x32
    SiglipImageProcessor, so that AutoModel / AutoTokenizer / AutoImageProcessor /
    AutoProcessor all load the folder offline. Returns the spec `hf:FOLDER`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()  # in memory: a model_prefix would be recorded in the file
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([_canonical(c) for c in captions]),
        model_writer=model_bytes,
        model_type="unigram",
        vocab_size=SIGLIP_SPM_VOCAB,
        hard_vocab_limit=False,
        character_coverage=1.0,
        pad_id=SPM_PAD_ID, pad_piece="<pad>",
        eos_id=SPM_EOS_ID, eos_piece="</s>",
        unk_id=SPM_UNK_ID, unk_piece="<unk>",
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    vocab_file = folder / "spiece.model"
    vocab_file.write_bytes(model_bytes.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(vocab_file), model_max_length=SIGLIP_MAX_LENGTH)
    if (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) != (SPM_EOS_ID, SPM_EOS_ID, SPM_UNK_ID):
        raise RuntimeError("tiny SigLIP tokenizer has unexpected special ids: pad "
                           f"{tokenizer.pad_token_id}, eos {tokenizer.eos_token_id}, unk {tokenizer.unk_token_id}")

    config = SiglipConfig(
        text_config=dict(
            vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=SIGLIP_MAX_LENGTH,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2,
        ),
    )
    torch.manual_seed(0)
    model = SiglipModel(config).eval()
    image_processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" on stderr, once per fixture
    try:
        model.save_pretrained(str(folder))
        # The processor writes tokenizer_config.json, spiece.model and processor_config.json
        # (which holds the image processor's settings for AutoImageProcessor too).
        SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return "hf:" + str(folder)


def draw_images(folder, n: int, size=(64, 48), seed: int = 0) -> List[str]:
    """Draw `n` distinct RGB JPEGs (coloured rectangles and ellipses on a plain
    background, fixed by `seed`) into `folder` as img_000.jpg, ... and return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    width, height = size
    paths, seen = [], set()
    for i in range(n):
        while True:
            image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            for _ in range(rng.randint(1, 3)):
                x0, y0 = rng.randrange(width - 8), rng.randrange(height - 8)
                x1, y1 = rng.randrange(x0 + 6, width + 1), rng.randrange(y0 + 6, height + 1)
                colour = tuple(rng.randrange(256) for _ in range(3))
                (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x1, y1], fill=colour)
            key = image.tobytes()
            if key not in seen:
                seen.add(key)
                break
        path = folder / f"img_{i:03d}.jpg"
        image.save(path, format="JPEG", quality=90)
        paths.append(str(path))
    return paths
