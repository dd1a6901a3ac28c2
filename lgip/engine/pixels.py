"""Pixels for the probes that work on them rather than on cached embeddings: image files
decoded in DataLoader workers to [0, 1] tensors with the model's own resize and crop
(`load_pixels`), and forward passes of one fixed batch shape (`fixed_rows`), so that a
row's result never depends on which rows share its batch: a resumed, reordered or
sharded run then gives the same numbers to the last bit.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
from tqdm import tqdm

from lgip.engine.embed import _collate_images, _ImageFiles
from lgip.engine.settings import EvalSettings
from lgip.models.base import VisionLanguageModel


def load_pixels(model: VisionLanguageModel, paths: List[str], settings: EvalSettings,
                desc: str = "pixels") -> Tuple[torch.Tensor, Dict[int, str]]:
    """[len(paths), 3, H, W] float32 CPU pixels in [0, 1] from `model.to_pixels` (resized
    and cropped, not normalised), decoded in `settings.workers` DataLoader workers, and
    {index: reason} for images that could not be read (their rows are NaN)."""
    pixels = None
    failures: Dict[int, str] = {}
    batches = [list(range(start, min(start + settings.batch_size, len(paths))))
               for start in range(0, len(paths), settings.batch_size)]
    loader = torch.utils.data.DataLoader(_ImageFiles(paths, model.to_pixels), batch_sampler=batches,
                                         num_workers=settings.workers, collate_fn=_collate_images)
    with tqdm(total=len(paths), desc=f"{desc} [{model.spec.spec}]", unit="img", disable=not settings.progress,
              dynamic_ncols=True) as bar:
        for indices, batch, failed in loader:
            failures.update(failed)
            if batch is not None:
                if pixels is None:
                    pixels = torch.full((len(paths),) + tuple(batch.shape[1:]), float("nan"))
                pixels[indices] = batch.float()
            bar.update(len(indices) + len(failed))
    if pixels is None:  # nothing decoded: the shape is unknown, the caller reports the failures
        pixels = torch.full((len(paths), 0), float("nan"))
    return pixels, failures


def fixed_rows(function: Callable[[torch.Tensor], torch.Tensor], rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """`function` (a [B, ...] -> [B, D] map, such as an image tower) called only on
    batches of exactly `rows` rows: a batch is cut into pieces of `rows` and the last
    piece is padded with copies of its first row (detached, so no gradient reaches
    them), whose outputs are dropped. Matrix kernels pick their blocking from a batch's
    shape, so the same row in batches of different sizes can differ in the last bits;
    at one fixed shape a row's result depends on that row alone, wherever it sits and
    whatever shares its batch."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, not {rows}")

    def padded(batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] == 0:
            return function(batch)
        outputs = []
        for start in range(0, batch.shape[0], rows):
            piece = batch[start:start + rows]
            count = piece.shape[0]
            if count < rows:
                filler = piece[:1].detach().expand((rows - count,) + tuple(piece.shape[1:]))
                piece = torch.cat([piece, filler])
            outputs.append(function(piece)[:count])
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    return padded
