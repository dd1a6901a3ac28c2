"""Statistics the metric functions share: pooled means as the release writes them, and
bootstrap intervals resampling images, all from per-pair arrays (numpy only).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

# The evaluation scripts give no interval to a metric over fewer images than this:
# resampling one or two images gives [x, x] or noise, which reads as certainty.
MIN_RECORDS_FOR_INTERVAL = 5

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
    computes all of them from the same resamples, as matrix products. A metric over
    fewer than `min_records` images gets None (the scripts ask for
    MIN_RECORDS_FOR_INTERVAL)."""

    def __init__(self, num_records: int, resamples: int, seed: int, min_records: int = 1):
        self.num_records, self.resamples, self.seed, self.min_records = num_records, resamples, seed, min_records
        self.names: List[str] = []
        self._sums: List[Any] = []
        self._counts: List[Any] = []
        self._records: List[int] = []  # distinct images behind each metric

    def add(self, name: str, values, records, weights=None) -> None:
        """Register the pooled mean of `values` (weighted by `weights` when given) over
        pairs belonging to `records` (compact record numbers)."""
        weights = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
        self.names.append(name)
        self._sums.append(np.bincount(records, weights=weights * values.astype(np.float64), minlength=self.num_records))
        self._counts.append(np.bincount(records, weights=weights, minlength=self.num_records))
        self._records.append(int(np.count_nonzero(self._counts[-1])))

    def intervals(self, chunk: int = 100) -> Dict[str, Optional[List[float]]]:

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
            enough = len(finite) and self._records[column] >= self.min_records
            result[name] = [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))] if enough else None
        return result
