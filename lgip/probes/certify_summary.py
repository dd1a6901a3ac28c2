"""What the certification script reports from the solver's arrays: certified accuracy
at extent levels, mean certified extent, the share certified on all of [0, 1], the
classes images flip to, the number of intervals. Plain functions with explicit
parameters, numpy only.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from lgip.probes.certify import EXTENT_LEVELS

# Summaries the certification script reports. Each takes arrays for the images (and edits)
# it should pool over: pass extent[:, e] for one edit or extent[:, family_edits] for a family.

def certified_accuracy(extent, correct, levels: Sequence[float] = EXTENT_LEVELS) -> Dict[float, Optional[float]]:
    """Share of all entries (images, pooled over the edits given) that are classified
    correctly and keep their class up to each extent level: correct and extent >= level.
    `extent` [N] or [N, k]; `correct` [N] bools. None for each level when there is no entry."""
    extent = np.asarray(extent, dtype=np.float64)
    correct = _broadcast_images(correct, extent)
    if extent.size == 0:
        return {float(level): None for level in levels}
    return {float(level): float(np.mean(correct & (extent >= level))) for level in levels}


def mean_certified_extent(extent, correct) -> Optional[float]:
    """Mean certified extent over correctly classified images (pooled over the edits
    given); one that never changes class counts 1. None when no image is correct."""
    extent = np.asarray(extent, dtype=np.float64)
    correct = _broadcast_images(correct, extent)
    return float(extent[correct].mean()) if correct.any() else None


def share_fully_certified(extent, correct) -> Optional[float]:
    """Among correctly classified images (pooled over the edits given), the share
    certified on all of [0, 1]. None when no image is correct."""
    extent = np.asarray(extent, dtype=np.float64)
    correct = _broadcast_images(correct, extent)
    return float(np.mean(extent[correct] >= 1.0)) if correct.any() else None


def top_flip_classes(flip_class, classnames: Sequence[str], top: int = 5, mask=None) -> List[Tuple[str, int]]:
    """The classes images flip to most often, as (name, count), most frequent first (ties
    by name); `mask` [N] (e.g. correctly classified) limits the images counted."""
    flip_class = np.asarray(flip_class)
    if mask is not None:
        flip_class = flip_class[_broadcast_images(mask, flip_class)]
    flips = flip_class[flip_class >= 0]
    counts = Counter(classnames[index] for index in flips.tolist())
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


def interval_count_distribution(n_intervals) -> Dict[int, float]:
    """Share of entries with each number of intervals, in increasing order of the count."""
    n_intervals = np.asarray(n_intervals).ravel()
    if n_intervals.size == 0:
        return {}
    values, counts = np.unique(n_intervals, return_counts=True)
    return {int(value): float(count / n_intervals.size) for value, count in zip(values, counts)}


def _broadcast_images(per_image, like: np.ndarray) -> np.ndarray:
    """A per-image [N] array repeated along the edit columns of `like` ([N] or [N, k])."""
    per_image = np.asarray(per_image, dtype=bool)
    if like.ndim == 2 and per_image.ndim == 1:
        per_image = per_image[:, None]
    return np.broadcast_to(per_image, like.shape)
