"""Resumable runs: a probe's per-item results written while the run goes on, into a folder
keyed by everything that decides them, so that a run killed mid-way skips the items it
finished when it is started again with the same settings. The files are the embedding
cache's shard files (keys, float32 rows, a digest checked before use), one kind of row
per name, so a damaged file costs its items, never a wrong number.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from lgip.engine.cache import ShardStore, library_versions

CHECKPOINT_FORMAT = 1


def checkpoint_folder(prefix: str, settings: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """(folder, keyed settings): `<prefix>.checkpoint-<key>`, the key a digest of
    `settings` (everything that changes an item's result) and the library versions, so
    a run with other settings never reads another run's items."""
    keyed = {"checkpoint_format": CHECKPOINT_FORMAT, "settings": settings, "versions": library_versions()}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{prefix}.checkpoint-{key}", keyed


class RunCheckpoint:
    """Finished items of one run, by integer id, as float32 rows of a few named kinds
    (say, per-item numbers and a few items' tensors). `add` queues rows; `flush` writes
    what is queued as one shard per kind, at most every `flush_seconds` unless forced;
    `load` reads what earlier runs wrote. Rows go to disk as float32, so a caller that
    wants a resumed run to equal a fresh one keeps float32 rows in both."""

    def __init__(self, folder: str, settings: Optional[Dict[str, Any]] = None, flush_seconds: float = 30.0,
                 writer: str = ""):
        # Under several ranks each names its shards (`writer`) and one alone writes settings.json.
        self.folder, self.settings, self.flush_seconds, self.writer = folder, settings, flush_seconds, writer
        self._stores: Dict[str, ShardStore] = {}
        self._last_flush = time.monotonic()

    def _store(self, kind: str) -> ShardStore:
        if kind not in self._stores:
            # Shards are cut by `flush`, never by a row count.
            self._stores[kind] = ShardStore(self.folder, kind, sys.maxsize, self.settings, self.writer)
        return self._stores[kind]

    def load(self, kind: str, ids: Sequence[int]):
        """(found [len(ids)] bool, rows [len(ids), W] float32 with NaN where not found,
        or None when nothing was found) for the items `ids` of this kind on disk."""
        found, rows = self._store(kind).fill([str(int(i)) for i in ids])
        return found, rows

    def add(self, kind: str, ids: Sequence[int], rows) -> None:
        """Queue finished items' rows ([len(ids), W], one width per kind)."""
        rows = np.asarray(rows, dtype=np.float32)
        if len(ids) != rows.shape[0]:
            raise ValueError(f"{len(ids)} ids but {rows.shape[0]} rows")
        if len(ids):
            self._store(kind).add([str(int(i)) for i in ids], rows)

    def flush(self, force: bool = True) -> bool:
        """Write the queued rows (one shard per kind), if forced or if `flush_seconds`
        have passed since the last write; True when it wrote."""
        if not force and time.monotonic() - self._last_flush < self.flush_seconds:
            return False
        for store in self._stores.values():
            store.flush()
        self._last_flush = time.monotonic()
        return True

    def remove(self) -> None:
        """Delete the folder: the run is done and its results are written elsewhere."""
        shutil.rmtree(self.folder, ignore_errors=True)
