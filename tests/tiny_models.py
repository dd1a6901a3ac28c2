"""Tiny, random, offline stand-ins for the models and data the LGIP scripts use.

The builders live in lgip_quickstart.py (the quickstart uses them too); this module adds
what only the tests need. Nothing here downloads anything: the offline switches are set
before transformers is imported.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Sequence

# Tests never reach the network. huggingface_hub reads these when it is first imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from lgip_quickstart import CAPTIONS, build_tiny_openclip, build_tiny_siglip, draw_images  # noqa: E402

__all__ = ["CAPTIONS", "build_tiny_openclip", "build_tiny_siglip", "draw_images", "write_records"]


def write_records(path, image_paths: Sequence[str], captions_per_image: int = 5, seed: int = 0) -> str:
    """Write a base JSONL at `path`, one record per image: image_id (its index),
    file_name, image_path (relative to the JSONL's folder) and orig_captions (distinct
    captions drawn from CAPTIONS, fixed by `seed`). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i, image_path in enumerate(image_paths):
            record = {
                "image_id": i,
                "file_name": os.path.basename(image_path),
                "image_path": Path(os.path.relpath(Path(image_path).resolve(), base)).as_posix(),
                "orig_captions": rng.sample(CAPTIONS, captions_per_image),
            }
            handle.write(json.dumps(record) + "\n")
    return str(path)
