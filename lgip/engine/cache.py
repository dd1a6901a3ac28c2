"""The embedding cache: one folder per model and settings, holding append-only shard
files of (key, embedding) rows, each checked against its digest before it is trusted.
A run reads the shards one at a time and keeps only the rows it asks for; new rows are
written every `shard_rows`, so a killed run keeps what it finished.
"""
from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import hashlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from lgip.io import atomic_output, write_json


CACHE_FORMAT = 1


def library_versions() -> Dict[str, str]:
    """Versions of the libraries that compute an embedding."""
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
    match is deleted with a warning and its rows are encoded again. Shard names carry
    the time, the process id and `writer` (a rank, where several ranks write into one
    folder), so no two writers ever make the same file; `settings` (written once, as
    `settings.json`) is given to one writer only."""

    def __init__(self, folder: Optional[str], kind: str, shard_rows: int, settings: Optional[Dict[str, Any]] = None,
                 writer: str = ""):
        self.folder, self.kind, self.shard_rows, self.settings = folder, kind, shard_rows, settings
        self.writer = writer
        self._pending_keys: List[str] = []
        self._pending_rows: List[Any] = []
        self.damaged = 0

    @staticmethod
    def _digest(keys, embeddings) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(keys).tobytes())
        digest.update(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def _shards(self):
        """(keys, embeddings) of each readable shard; damaged ones are removed."""
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
        if self.folder is None or not self._pending_keys:
            return
        keys = np.asarray(self._pending_keys)
        embeddings = np.concatenate(self._pending_rows).astype(np.float32)
        settings_path = os.path.join(self.folder, "settings.json")
        if self.settings is not None and not os.path.exists(settings_path):  # created on first write only
            write_json(settings_path, self.settings)
        path = os.path.join(self.folder, f"{self.kind}-{time.time_ns()}-{os.getpid()}{self.writer}.npz")
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

