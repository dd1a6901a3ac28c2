"""The embedding cache: one folder per model and settings, holding append-only shard
files of (key, embedding) rows, each checked against its digest before it is trusted.
A run reads the shards one at a time and keeps only the rows it asks for; new rows are
written every `shard_rows`, so a killed run keeps what it finished.

Text shards also hold each text's token facts (length, truncation, a 128-bit hash of its
token ids), so a run whose texts are cached needs no tokenizer. Shards written before
the facts existed hold only keys, embeddings and digest; they are read as before and
their texts are tokenised. The facts have a digest of their own, so older versions of
this code still read the newer shards.
"""
from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from lgip.io import atomic_output, write_json


CACHE_FORMAT = 1
KEY_BYTES = 48  # a key is a 40-hex-digit sha1, then `#width` for a text at a fixed width
DIGEST_BYTES = 40  # the text's own digest: the key without `#width`


def library_versions() -> Dict[str, str]:
    """Versions of the libraries that compute an embedding."""
    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "open_clip_torch", "transformers", "numpy", "Pillow", "timm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


@dataclass
class TokenFacts:
    """What the engine needs of tokenised texts when it does not need their tokens:
    `length` (tokens up to and including the end token, after truncation), `truncated`
    (the text did not fit) and `hash` [N, 2]: two independent 64-bit hashes of the token
    ids, which with the length tell texts with identical ids apart from the rest (a
    false match needs both hashes to collide: about one chance in 2**128 per pair)."""
    length: np.ndarray
    truncated: np.ndarray
    hash: np.ndarray

    @classmethod
    def empty(cls, count: int) -> "TokenFacts":
        return cls(np.zeros(count, np.int64), np.zeros(count, bool), np.zeros((count, 2), np.uint64))

    def take(self, rows) -> "TokenFacts":
        return TokenFacts(self.length[rows], self.truncated[rows], self.hash[rows])

    def put(self, rows, other: "TokenFacts") -> None:
        self.length[rows], self.truncated[rows], self.hash[rows] = other.length, other.truncated, other.hash

    @classmethod
    def concatenate(cls, parts: List["TokenFacts"]) -> "TokenFacts":
        return cls(*(np.concatenate([getattr(part, name) for part in parts])
                     for name in ("length", "truncated", "hash")))

    def arrays(self) -> Dict[str, np.ndarray]:
        """The shard members that hold the facts."""
        return {"token_length": self.length.astype(np.int32), "token_truncated": self.truncated.astype(bool),
                "token_hash": self.hash.astype(np.uint64)}


class ShardStore:
    """Embeddings of one kind (images or texts) for one model and settings, as shard
    files `<kind>-*.npz` holding keys, rows and a sha256 of both (text shards also the
    token facts and a sha256 of those). Nothing is held in memory but the rows not yet
    written: `fill` reads the shards one at a time and copies the rows a run asks for. A
    shard that cannot be read or whose digests do not match is deleted with a warning
    and its rows are encoded again. Shard names carry the time, the process id and
    `writer` (a rank, where several ranks write into one folder), so no two writers ever
    make the same file; `settings` (written once, as `settings.json`) is given to one
    writer only."""

    def __init__(self, folder: Optional[str], kind: str, shard_rows: int, settings: Optional[Dict[str, Any]] = None,
                 writer: str = ""):
        self.folder, self.kind, self.shard_rows, self.settings = folder, kind, shard_rows, settings
        self.writer = writer
        self._pending_keys: List[str] = []
        self._pending_rows: List[Any] = []
        self._pending_facts: List[Optional[TokenFacts]] = []
        self.damaged = 0

    @staticmethod
    def _digest(*arrays) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(arrays[0]).tobytes())
        digest.update(np.ascontiguousarray(arrays[1], dtype=np.float32).tobytes())
        for array in arrays[2:]:
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def _shards(self):
        """(keys, embeddings, TokenFacts or None) of each readable shard; damaged ones
        are removed."""
        if self.folder is None or not os.path.isdir(self.folder):
            return
        for name in sorted(os.listdir(self.folder)):
            if not (name.startswith(self.kind + "-") and name.endswith(".npz")):
                continue
            path = os.path.join(self.folder, name)
            try:
                facts = None
                with np.load(path, allow_pickle=False) as shard:
                    keys, embeddings, digest = shard["keys"], shard["embeddings"], str(shard["digest"])
                    if "token_length" in shard.files:
                        facts = TokenFacts(shard["token_length"].astype(np.int64), shard["token_truncated"],
                                           shard["token_hash"])
                        facts_digest = str(shard["token_digest"])
                if digest != self._digest(keys, embeddings) or len(keys) != len(embeddings) or embeddings.ndim != 2:
                    raise ValueError("checksum mismatch")
                if facts is not None and (facts_digest != self._digest(keys, embeddings, *facts.arrays().values())
                                          or facts.hash.shape != (len(keys), 2)):
                    raise ValueError("checksum mismatch in the token facts")
            except Exception as err:  # any unreadable shard is rebuilt, whatever broke it
                print(f"warning: cache file {path} is damaged ({type(err).__name__}: {err}); removed, "
                      f"its embeddings will be computed again", file=sys.stderr)
                self.damaged += 1
                with contextlib.suppress(OSError):
                    os.remove(path)
                continue
            yield keys, embeddings, facts

    def fill(self, keys: Sequence[Optional[str]]):
        """(found mask, matrix) for `keys` (distinct, or None: never cached): the cached
        rows, NaN elsewhere; the matrix is None when nothing was found."""
        found, matrix, _, _ = self.fill_with_facts(keys, [])
        return found, matrix

    def fill_with_facts(self, keys: Sequence[Optional[str]], text_keys: Sequence[str]):
        """`fill(keys)` and, in the same pass over the shards, the token facts of the
        texts with the distinct digests `text_keys` (from any row of the text, at any
        width): (found, matrix, TokenFacts, known mask of text_keys)."""
        wanted = _sorted_keys([key or "" for key in keys], KEY_BYTES)
        wanted_texts = _sorted_keys(text_keys, DIGEST_BYTES)
        found = np.zeros(len(keys), dtype=bool)
        facts, known = TokenFacts.empty(len(text_keys)), np.zeros(len(text_keys), dtype=bool)
        matrix = None
        for shard_keys, embeddings, shard_facts in self._shards():
            shard_keys = shard_keys.astype(f"S{KEY_BYTES}")
            shard_rows, rows = _matches(wanted, shard_keys)
            if len(rows):
                if matrix is None:
                    matrix = np.full((len(keys), embeddings.shape[1]), np.nan, dtype=np.float32)
                matrix[rows] = embeddings[shard_rows]
                found[rows] = True
            if shard_facts is not None and len(text_keys):
                shard_rows, rows = _matches(wanted_texts, shard_keys.astype(f"S{DIGEST_BYTES}"))
                facts.put(rows, shard_facts.take(shard_rows))
                known[rows] = True
        return found, matrix, facts, known

    def add(self, keys: Sequence[str], embeddings, facts: Optional[TokenFacts] = None) -> None:
        """Queue new rows (with their texts' token facts, for texts); every `shard_rows`
        of them become a shard on disk."""
        if self.folder is None:
            return
        self._pending_keys.extend(keys)
        self._pending_rows.append(embeddings)
        self._pending_facts.append(facts)
        if len(self._pending_keys) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        """Write the rows not yet on disk as one shard, atomically (with token facts
        where every row queued came with them)."""
        if self.folder is None or not self._pending_keys:
            return
        keys = np.asarray(self._pending_keys)
        embeddings = np.concatenate(self._pending_rows).astype(np.float32)
        members = {"keys": keys, "embeddings": embeddings, "digest": np.asarray(self._digest(keys, embeddings))}
        if all(facts is not None for facts in self._pending_facts):
            fact_arrays = TokenFacts.concatenate(self._pending_facts).arrays()
            members.update(fact_arrays, token_digest=np.asarray(self._digest(keys, embeddings, *fact_arrays.values())))
        settings_path = os.path.join(self.folder, "settings.json")
        if self.settings is not None and not os.path.exists(settings_path):  # created on first write only
            write_json(settings_path, self.settings)
        path = os.path.join(self.folder, f"{self.kind}-{time.time_ns()}-{os.getpid()}{self.writer}.npz")
        with atomic_output(path, "wb") as handle:
            np.savez(handle, **members)
        self._pending_keys, self._pending_rows, self._pending_facts = [], [], []


def _sorted_keys(keys: Sequence[str], width: int):
    """(sorted keys as bytes of `width`, the order that sorts them), for `_matches`."""
    array = np.array(keys, dtype=f"S{width}") if len(keys) else np.zeros(0, dtype=f"S{width}")
    order = np.argsort(array, kind="stable")
    return array[order], order


def _matches(wanted, shard_keys):
    """(rows of the shard, rows of the wanted keys) where the shard holds a wanted key."""
    sorted_wanted, order = wanted
    positions = np.searchsorted(sorted_wanted, shard_keys, side="left")
    hits = positions < len(sorted_wanted)
    hits[hits] = sorted_wanted[positions[hits]] == shard_keys[hits]
    return np.flatnonzero(hits), order[positions[hits]]


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

