"""Encoding: each unique image and each unique text once, in batches, through the cache.
Images decode in DataLoader workers with the model's own preprocessing; texts are
tokenised once into a ragged table and encoded in batches of one token width.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from lgip.engine.cache import ShardStore, cache_folder, image_key, text_key
from lgip.engine.distributed import SOLO, Dist, RowCollector
from lgip.engine.settings import EvalSettings
from lgip.models.base import VisionLanguageModel

class TokenTable:
    """Every text of a run tokenised once and stored ragged (each text's own tokens,
    no padding), so memory follows the tokens: `lengths`, `truncated`, and `row_hash`,
    a 64-bit hash of the padded row for finding texts with equal token ids."""
    def __init__(self, flat, offsets, lengths, truncated, row_hash, pad_id: int, full_width: int):
        self.flat, self.offsets, self.lengths = flat, offsets, lengths
        self.truncated, self.row_hash, self.pad_id, self.full_width = truncated, row_hash, pad_id, full_width

    def rows(self, texts, width: int):
        """int64 tensor [len(texts), width]: each text's tokens, then `pad_id`."""
        out = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        for row, text in enumerate(texts):
            length = min(int(self.lengths[text]), width)
            out[row, :length] = self.flat[self.offsets[text]:self.offsets[text] + length]
        return torch.from_numpy(out)

    def same_ids(self, left, right):
        """Boolean per pair: texts `left[k]` and `right[k]` have identical token ids."""
        same = (self.row_hash[left] == self.row_hash[right]) & (self.lengths[left] == self.lengths[right])
        for k in np.flatnonzero(same):  # a hash match is checked token by token
            a, b, n = self.offsets[left[k]], self.offsets[right[k]], self.lengths[left[k]]
            same[k] = np.array_equal(self.flat[a:a + n], self.flat[b:b + n])
        return same


class _ImageFiles:
    """A torch Dataset over image files: (index, pixels or None, failure reason)."""
    def __init__(self, paths: List[str], transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            with Image.open(self.paths[index]) as image:
                return index, self.transform(image.convert("RGB")), ""
        except Exception as err:  # a missing or undecodable image is reported, never fatal here
            return index, None, f"{type(err).__name__}: {err}"


def _collate_images(items):
    decoded = [(index, pixels) for index, pixels, _ in items if pixels is not None]
    failed = [(index, reason) for index, pixels, reason in items if pixels is None]
    indices = [index for index, _ in decoded]
    pixels = torch.stack([p for _, p in decoded]) if decoded else None
    return indices, pixels, failed


def image_keys(paths: List[str]) -> List[Optional[str]]:
    """The cache key of each image; None for a file that cannot be found (the loader
    then reports why)."""
    keys: List[Optional[str]] = []
    for path in paths:
        try:
            keys.append(image_key(path))
        except OSError:
            keys.append(None)
    return keys


def encode_images(model: VisionLanguageModel, paths: List[str], store: ShardStore, batch_size: int,
                  workers: int, progress: bool = True, dist: Dist = SOLO):
    """Embeddings [len(paths), D] (NaN rows for images that failed) and {index: reason}
    for the failures. Cached images are not opened; the rest decode in DataLoader
    workers with the model's own preprocessing. Under several ranks the main rank reads
    the cache, each rank encodes a strided slice of the batches one process would
    encode (writing its own cache shards), and the main rank gets every row and every
    failure; the others get (None, {})."""
    keys = image_keys(paths)
    found, matrix = store.fill(keys) if dist.is_main else (None, None)
    found = dist.broadcast_mask(found, len(keys))
    missing = np.flatnonzero(~found).tolist()
    batches = dist.shard([missing[start:start + batch_size] for start in range(0, len(missing), batch_size)])
    failures: Dict[int, str] = {}
    collector = RowCollector(dist, len(paths), matrix)
    if batches:
        loader = torch.utils.data.DataLoader(_ImageFiles(paths, model.image_transform), batch_sampler=batches,
                                             num_workers=workers, collate_fn=_collate_images)
        with tqdm(total=sum(map(len, batches)), desc=f"images [{model.spec.spec}]", unit="img", disable=not progress,
                  dynamic_ncols=True) as bar:
            for indices, pixels, failed in loader:
                failures.update(failed)
                if pixels is not None:
                    embeddings = model.encode_images(pixels).numpy()
                    collector.add(indices, embeddings)
                    store.add([keys[i] for i in indices], embeddings)
                bar.update(len(indices) + len(failed))
        store.flush()
    matrix = collector.finish()
    if dist.distributed:
        every_rank = dist.gather_json(sorted(failures.items()))
        if every_rank is None:
            return None, {}
        failures = {index: reason for part in every_rank for index, reason in part}
    return (matrix if matrix is not None else np.full((len(paths), 1), np.nan, np.float32)), failures


def tokenize_all(model: VisionLanguageModel, texts: List[str], chunk: int = 8192, progress: bool = True,
                 dist: Dist = SOLO) -> TokenTable:
    """Tokenise every text once, in chunks so memory stays flat, into a TokenTable.
    Under several ranks each tokenises a strided share of the chunks and every rank
    gets the whole table (as tensors: ids, lengths, truncation, hashes)."""
    hash_weights = np.random.default_rng(0).integers(1, 2 ** 63, size=512, dtype=np.uint64) | np.uint64(1)
    starts = dist.shard(range(0, len(texts), chunk))
    chunks, full_width = [], 1
    for start in tqdm(starts, desc="tokenising", unit="chunk", disable=not progress or len(texts) <= chunk,
                      dynamic_ncols=True):
        batch = model.tokenize(texts[start:start + chunk])
        ids = np.asarray(batch.ids, dtype=np.int64)
        full_width = ids.shape[1]
        filled = np.arange(full_width)[None, :] < batch.lengths[:, None]
        chunks.append((ids[filled].astype(np.int32), batch.lengths, batch.truncated,
                       (ids.astype(np.uint64) * hash_weights[:full_width]).sum(axis=1)))
    if dist.distributed:
        chunks, full_width = _every_rank_chunks(chunks, full_width, len(texts), chunk, dist)
    flat, lengths, truncated, hashes = (list(column) for column in zip(*chunks)) if chunks else ([], [], [], [])
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    return TokenTable(np.concatenate(flat) if flat else np.zeros(0, np.int32), offsets, lengths,
                      np.concatenate(truncated) if truncated else np.zeros(0, bool),
                      np.concatenate(hashes) if hashes else np.zeros(0, np.uint64), model.pad_id, full_width)


def _every_rank_chunks(mine, full_width: int, total: int, chunk: int, dist: Dist):
    """(every chunk's (flat ids, lengths, truncated, hashes), in text order; the full
    width) from each rank's own strided share of the chunks."""
    empty = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.uint64))
    columns = [dist.all_gather_arrays(np.concatenate([part[k] for part in mine]) if mine else empty[k])
               for k in range(4)]
    full_width = int(max(part[0] for part in dist.all_gather_arrays(np.array([full_width], np.int64))))
    every = []
    for rank in range(dist.world_size):
        flat, lengths, truncated, hashes = (column[rank] for column in columns)
        text_at = token_at = 0
        for start in range(rank * chunk, total, dist.world_size * chunk):  # this rank's chunks, in order
            count = min(chunk, total - start)
            tokens = int(lengths[text_at:text_at + count].sum())
            every.append((start, (flat[token_at:token_at + tokens], lengths[text_at:text_at + count],
                                  truncated[text_at:text_at + count], hashes[text_at:text_at + count])))
            text_at, token_at = text_at + count, token_at + tokens
    return [part for _, part in sorted(every, key=lambda item: item[0])], full_width


def encode_text_units(model: VisionLanguageModel, texts: List[str], tokens: TokenTable, unit_text, unit_width,
                      store: ShardStore, batch_size: int, progress: bool = True, dist: Dist = SOLO):
    """Embeddings [U, D] of text units: text `unit_text[u]` padded to `unit_width[u]`
    tokens (0: the model's default). Only units missing from the cache are encoded,
    in batches of one width: where trimming is exact (causal, end-token pooling) that
    width is each text's own length, so no padding is encoded at all. Under several
    ranks each encodes a strided slice of those batches and the main rank gets every
    row; the others get None."""
    keys = [text_key(texts[t], int(w)) for t, w in zip(unit_text.tolist(), unit_width.tolist())]
    found, matrix = store.fill(keys) if dist.is_main else (None, None)
    found = dist.broadcast_mask(found, len(keys))
    missing = np.flatnonzero(~found)
    collector = RowCollector(dist, len(keys), matrix)
    if len(missing):
        width = unit_width[missing].copy()
        default = width == 0
        width[default] = tokens.lengths[unit_text[missing[default]]] if model.trims_padding else tokens.full_width
        order = np.lexsort((missing, width))
        missing, width = missing[order], width[order]
        starts = np.flatnonzero(np.r_[True, width[1:] != width[:-1]])
        batches = dist.shard([(missing[start:min(start + batch_size, group_stop)], int(width[start]))
                              for group_start, group_stop in zip(starts, np.r_[starts[1:], len(missing)])
                              for start in range(group_start, group_stop, batch_size)])
        with tqdm(total=sum(len(batch) for batch, _ in batches), desc=f"texts  [{model.spec.spec}]", unit="txt",
                  disable=not progress, dynamic_ncols=True) as bar:
            for batch, batch_width in batches:
                rows = unit_text[batch]
                embeddings = model.encode_tokens(tokens.rows(rows, batch_width), tokens.lengths[rows]).numpy()
                collector.add(batch, embeddings)
                store.add([keys[u] for u in batch], embeddings)
                bar.update(len(batch))
        store.flush()
    matrix = collector.finish()
    if not dist.is_main:
        return None
    return matrix if matrix is not None else np.zeros((0, 1), np.float32)


def cache_stores(model: VisionLanguageModel, settings: EvalSettings, dist: Dist = SOLO):
    """(image store, text store) of `model` under `settings.cache_dir` (stores that keep
    nothing when the cache is off), keyed by everything that changes an embedding.
    Under several ranks each rank's shards carry its rank and only the main rank
    writes `settings.json`."""
    # Named by the spec's own tag, not the run's: a model finds its cache whatever a run calls it.
    folder, keyed_settings = cache_folder(settings.cache_dir, model.spec.default_tag,
                                          {**model.settings(), "device": model.device.split(":")[0]})
    writer, owned_settings = (f"-rank{dist.rank}" if dist.distributed else ""), (keyed_settings if dist.is_main else None)
    return (ShardStore(folder, "images", settings.cache_shard_rows, owned_settings, writer),
            ShardStore(folder, "texts", settings.cache_shard_rows, owned_settings, writer))


def embed_images(model: VisionLanguageModel, paths: List[str], settings: EvalSettings, dist: Dist = SOLO):
    """Unit embeddings [len(paths), D] of image files through the cache (NaN rows for
    images that failed) and {index: reason} for the failures; under several ranks the
    ranks share the work and the others get (None, {})."""
    image_store, _ = cache_stores(model, settings, dist)
    return encode_images(model, paths, image_store, settings.batch_size, settings.workers,
                         settings.progress and dist.is_main, dist)


def embed_texts(model: VisionLanguageModel, texts: List[str], settings: EvalSettings, dist: Dist = SOLO):
    """Unit embeddings [len(texts), D] of distinct texts through the cache, each at the
    model's default padding; under several ranks the ranks share the work and the
    others get None."""
    _, text_store = cache_stores(model, settings, dist)
    progress = settings.progress and dist.is_main
    tokens = tokenize_all(model, texts, progress=progress, dist=dist)
    return encode_text_units(model, texts, tokens, np.arange(len(texts)), np.zeros(len(texts), np.int64), text_store,
                             settings.text_batch_size, progress, dist)
