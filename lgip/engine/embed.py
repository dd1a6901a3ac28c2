"""Encoding: each unique image and each unique text once, through the cache.

Images decode in DataLoader workers with the model's own preprocessing (into pinned
memory, a few batches ahead, on CUDA). A text the cache knows needs no tokenizer: its
token facts (length, truncation, hash) are cached beside its embedding. The other texts
are tokenised once into a ragged table; the missing ones are encoded with each distinct
prefix computed once where the tower allows (chunks of texts sorted by token ids), else
in batches of one token width. The model is asked for (`model.loaded()`) only where
something must be decoded, tokenised or encoded, and torch is imported only there, so a
run that finds everything in the cache loads no model and imports no torch.

Under several ranks (`dist`) the main rank reads the cache, the ranks share the
tokenising (every rank gets every result) and the image batches and text chunks one
process would encode (each writing its own shards), and the main rank gets every row.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from lgip.engine.cache import ShardStore, TokenFacts, cache_folder, image_key, text_key
from lgip.engine.distributed import SOLO, Dist, RowCollector
from lgip.engine.settings import EvalSettings

if TYPE_CHECKING:
    from lgip.models.base import VisionLanguageModel

# Texts per prefix-shared call. Memory follows it (the chunk's token matrix and trie, its
# end states); the sharing lost at a chunk's edge is one path of a sorted chunk. 2,048 to
# 16,384 cost the same within noise on bench_eval's model; chunks are what ranks share
# under torchrun, so not larger.
PREFIX_CHUNK_ROWS = 8192
# Texts are sorted by this many leading tokens before they are cut into chunks: enough
# for texts that share a prefix to land in one chunk (each chunk's trie sorts fully).
PREFIX_SORT_TOKENS = 32
SORT_BLOCK_ROWS = 65536  # texts whose sort keys are built at once
PREFETCH_BATCHES = 4  # image batches each DataLoader worker decodes ahead of the encoder
TOKENIZE_CHUNK = 8192  # texts per tokenizer call, so memory stays flat
# Seeds of the two independent 64-bit token hashes (splitmix64 constants).
HASH_SEEDS = (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03)


def _mix64(values):
    """splitmix64's finaliser, elementwise on uint64 (wrapping)."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def token_hashes(ids, lengths) -> np.ndarray:
    """[N, 2] uint64: two independent hashes of each row's first `lengths[i]` token ids,
    each the wrapping sum of a mixed (token, position) code. Equal rows hash equally; for
    two different rows both hashes collide about once in 2**128."""
    ids = np.asarray(ids, dtype=np.int64)
    positions = np.arange(ids.shape[1], dtype=np.uint64)
    codes = (ids.astype(np.uint64) << np.uint64(16)) | positions[None, :]
    inside = positions[None, :] < np.asarray(lengths, dtype=np.uint64)[:, None]
    hashes = np.empty((len(ids), 2), dtype=np.uint64)
    for column, seed in enumerate(HASH_SEEDS):
        hashes[:, column] = np.where(inside, _mix64(codes ^ np.uint64(seed)), np.uint64(0)).sum(axis=1, dtype=np.uint64)
    return hashes


class TokenTable:
    """The token facts of every text of a run (`facts`: length, truncation, hashes;
    `cached`: which facts the cache held, None where it was not asked), and the token
    ids of the texts that were tokenised, ragged (`flat[offsets[t]:offsets[t] +
    lengths[t]]`, offset -1 where a text was not tokenised), so memory follows the tokens."""

    def __init__(self, facts: TokenFacts, cached=None):
        self.facts, self.cached = facts, cached
        self.flat = np.zeros(0, np.int32)
        self.offsets = np.full(len(facts.length), -1, dtype=np.int64)
        self.pad_id = 0  # set by whoever tokenises with a model
        self.seconds = 0.0  # spent tokenising

    @property
    def lengths(self):
        return self.facts.length

    @property
    def truncated(self):
        return self.facts.truncated

    def tokenise(self, model: "VisionLanguageModel", texts: List[str], which, progress: bool = True,
                 dist: Dist = SOLO) -> None:
        """Tokenise `texts[which]` (those not tokenised yet), in chunks, keeping their ids
        and facts (the model is loaded only where there is something to tokenise). Under
        several ranks, a call every rank makes with the same `which`: each tokenises a
        strided share of the chunks and every rank gets every result."""
        which = np.asarray(which, dtype=np.int64)
        which = which[self.offsets[which] < 0]
        mine = dist.shard([which[start:start + TOKENIZE_CHUNK] for start in range(0, len(which), TOKENIZE_CHUNK)])
        if mine:
            model = model.loaded()  # before the clock starts: `seconds` is tokenising alone
        started = time.perf_counter()
        parts = []
        for rows in tqdm(mine, desc="tokenising", unit="chunk", disable=not progress or len(mine) <= 1,
                         dynamic_ncols=True):
            batch = model.tokenize([texts[t] for t in rows])
            ids = np.asarray(batch.ids, dtype=np.int64)
            lengths = np.asarray(batch.lengths, dtype=np.int64)
            parts.append((rows, ids[np.arange(ids.shape[1])[None, :] < lengths[:, None]].astype(np.int32), lengths,
                          np.asarray(batch.truncated, bool), token_hashes(ids, lengths)))
        if dist.distributed and len(which):
            parts = _every_rank_parts(parts, dist)
        pieces, start_offset = [self.flat], len(self.flat)
        for rows, flat, lengths, truncated, hashes in parts:
            self.facts.put(rows, TokenFacts(lengths, truncated, hashes))
            self.offsets[rows] = start_offset + np.concatenate([[0], np.cumsum(lengths)[:-1]])
            pieces.append(flat)
            start_offset += len(flat)
        self.flat = np.concatenate(pieces)
        self.seconds += time.perf_counter() - started

    def rows(self, texts, width: int, pad_id: Optional[int] = None) -> np.ndarray:
        """int64 [len(texts), width]: each (tokenised) text's ids, then `pad_id` (the
        model's by default)."""
        texts = np.asarray(texts, dtype=np.int64)
        positions = np.arange(width)
        inside = positions[None, :] < np.minimum(self.lengths[texts], width)[:, None]
        where = np.minimum(self.offsets[texts][:, None] + positions[None, :], max(len(self.flat) - 1, 0))
        return np.where(inside, self.flat[where] if len(self.flat) else 0,
                        self.pad_id if pad_id is None else pad_id).astype(np.int64)

    def token_lists(self, texts) -> List[np.ndarray]:
        """Each (tokenised) text's own ids, no padding."""
        return [self.flat[self.offsets[t]:self.offsets[t] + self.lengths[t]] for t in np.asarray(texts).tolist()]

    def same_ids(self, left, right):
        """Boolean per pair: texts `left[k]` and `right[k]` have identical token ids
        (equal lengths and both hashes)."""
        return (self.lengths[left] == self.lengths[right]) & (self.facts.hash[left] == self.facts.hash[right]).all(axis=1)


def _every_rank_parts(mine, dist: Dist):
    """Every rank's tokenised parts (rows, flat ids, lengths, truncated, hashes), from
    each rank's own, on every rank."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, bool),
             np.zeros((0, 2), np.uint64))
    columns = [dist.all_gather_arrays(np.concatenate([part[k] for part in mine]).reshape(-1) if mine
                                      else empty[k].reshape(-1)) for k in range(5)]
    return [(rows, flat, lengths, truncated, hashes.reshape(-1, 2))
            for rows, flat, lengths, truncated, hashes in zip(*columns)]


def tokenize_all(model: "VisionLanguageModel", texts: List[str], progress: bool = True,
                 dist: Dist = SOLO) -> TokenTable:
    """Every text tokenised once into a TokenTable (under several ranks, shared by them;
    every rank gets the whole table)."""
    tokens = TokenTable(TokenFacts.empty(len(texts)))
    tokens.tokenise(model, texts, np.arange(len(texts)), progress, dist)
    tokens.pad_id = model.pad_id
    return tokens


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------

class _ImageFiles:
    """A torch Dataset over image files: (index, pixels or None, failure reason)."""
    def __init__(self, paths: List[str], transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from PIL import Image

        try:
            with Image.open(self.paths[index]) as image:
                return index, self.transform(image.convert("RGB")), ""
        except Exception as err:  # a missing or undecodable image is reported, never fatal here
            return index, None, f"{type(err).__name__}: {err}"


def _collate_images(items):
    import torch

    decoded = [(index, pixels) for index, pixels, _ in items if pixels is not None]
    failed = [(index, reason) for index, pixels, reason in items if pixels is None]
    indices = [index for index, _ in decoded]
    pixels = torch.stack([p for _, p in decoded]) if decoded else None
    return indices, pixels, failed


def _unopenable(path: str) -> Optional[str]:
    """Why `path` cannot be opened, as the loader reports it (None if it can be)."""
    try:
        open(path, "rb").close()
    except OSError as err:
        return f"{type(err).__name__}: {err}"
    return None


@contextlib.contextmanager
def _threads_beside_workers(workers: int, on_cuda: bool):
    """While `workers` DataLoader processes decode for a model on the CPU, its intra-op
    threads are what this process's CPUs leave over (at least one), so that decoding and
    encoding do not fight over cores (bench_eval's 300 images on 2 CPUs with 2 workers:
    1.6 s instead of 2.1 s, and a quarter less CPU time)."""
    if workers <= 0 or on_cuda:
        yield
        return
    import torch

    before = torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(before, cpus - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def encode_images(model: "VisionLanguageModel", paths: List[str], store: ShardStore, batch_size: int,
                  workers: int, progress: bool = True, dist: Dist = SOLO):
    """Embeddings [len(paths), D] (NaN rows for images that failed) and {index: reason}
    for the failures. Cached images are not opened and files that are not there are
    reported without the model; the rest decode in DataLoader workers with the model's
    own preprocessing. Under several ranks the main rank reads the cache, each rank
    encodes a strided slice of the batches one process would encode (writing its own
    cache shards), and the main rank gets every row and every failure; the others get
    (None, {})."""
    keys: List[Optional[str]] = []
    failures: Dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            keys.append(image_key(path))
        except OSError:
            keys.append(None)
            reason = _unopenable(path)
            if reason is not None:
                failures[index] = reason
    found, matrix = store.fill(keys) if dist.is_main else (None, None)
    found = dist.broadcast_mask(found, len(keys)).copy()
    found[list(failures)] = True  # nothing to decode there
    missing = np.flatnonzero(~found).tolist()
    batches = dist.shard([missing[start:start + batch_size] for start in range(0, len(missing), batch_size)])
    collector = RowCollector(dist, len(paths), matrix)
    if batches:
        import torch

        model = model.loaded()
        on_cuda = model.device.startswith("cuda")
        loader = torch.utils.data.DataLoader(_ImageFiles(paths, model.image_transform), batch_sampler=batches,
                                             num_workers=workers, collate_fn=_collate_images, pin_memory=on_cuda,
                                             prefetch_factor=PREFETCH_BATCHES if workers > 0 else None)
        with tqdm(total=sum(map(len, batches)), desc=f"images [{model.spec.spec}]", unit="img", disable=not progress,
                  dynamic_ncols=True) as bar, _threads_beside_workers(workers, on_cuda):
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


# ---------------------------------------------------------------------------------------
# Texts
# ---------------------------------------------------------------------------------------

def prefix_order(tokens: TokenTable, texts) -> np.ndarray:
    """The order that sorts `texts` by their first PREFIX_SORT_TOKENS token ids, so that
    texts sharing a prefix are neighbours."""
    if not len(texts):
        return np.zeros(0, np.int64)
    width = min(PREFIX_SORT_TOKENS, int(tokens.lengths[texts].max()))
    # Big-endian ids + 1 (0 marks the end) as fixed-width byte strings sort like the rows;
    # built in blocks, so the int64 rows never exist for all texts at once.
    keys = np.empty((len(texts), width), dtype=">u4")
    for start in range(0, len(texts), SORT_BLOCK_ROWS):
        keys[start:start + SORT_BLOCK_ROWS] = tokens.rows(texts[start:start + SORT_BLOCK_ROWS], width, pad_id=-1) + 1
    return np.argsort(keys.view(f"S{4 * width}").ravel(), kind="stable")


def text_batches(model: "VisionLanguageModel", tokens: TokenTable, unit_text, unit_width, missing, batch_size: int):
    """The batches that encode the `missing` units, as (units, width): width None for a
    chunk of texts at their own length that the model encodes with shared prefixes (in
    prefix order), else a batch of texts padded to that width (their own length where
    trimming is exact, else the model's width), grouped by width."""
    width = unit_width[missing].copy()
    batches = []
    if model.prefix_sharing:
        shared = missing[width == 0]
        shared = shared[prefix_order(tokens, unit_text[shared])]
        batches += [(shared[start:start + PREFIX_CHUNK_ROWS], None)
                    for start in range(0, len(shared), PREFIX_CHUNK_ROWS)]
        missing, width = missing[width != 0], width[width != 0]
    default = width == 0
    width[default] = tokens.lengths[unit_text[missing[default]]] if model.trims_padding else model.text_width()
    order = np.lexsort((missing, width))
    missing, width = missing[order], width[order]
    starts = np.flatnonzero(np.r_[True, width[1:] != width[:-1]]) if len(missing) else []
    for group_start, group_stop in zip(starts, np.r_[starts[1:], len(missing)]):
        batches += [(missing[start:min(start + batch_size, group_stop)], int(width[start]))
                    for start in range(group_start, group_stop, batch_size)]
    return batches


def encode_text_units(model: "VisionLanguageModel", texts: List[str], tokens: TokenTable, unit_text, unit_width,
                      store: ShardStore, batch_size: int, progress: bool = True, cached=None, dist: Dist = SOLO):
    """Embeddings [U, D] of text units: text `unit_text[u]` padded to `unit_width[u]`
    tokens (0: the model's default). Only units missing from the cache (`cached`:
    (keys, found, matrix) already read, else read here) are encoded, in `text_batches`; their
    texts are tokenised first where they were not. Rows found in the cache whose texts
    had no token facts there (shards older than the facts) are written again with them.
    Under several ranks each encodes a strided slice of the batches and the main rank
    gets every row; the others get None."""
    if cached is None:
        keys = [text_key(texts[t], int(w)) for t, w in zip(unit_text.tolist(), unit_width.tolist())]
        cached = (keys, *(store.fill(keys) if dist.is_main else (None, None)))
    keys, found, matrix = cached
    found = dist.broadcast_mask(found, len(keys))
    missing = np.flatnonzero(~found)
    collector = RowCollector(dist, len(keys), matrix)
    if len(missing):
        import torch

        tokens.tokenise(model, texts, np.unique(unit_text[missing]), progress, dist)
        model = model.loaded()
        tokens.pad_id = model.pad_id
        batches = dist.shard(text_batches(model, tokens, unit_text, unit_width, missing, batch_size))
        with tqdm(total=sum(len(batch) for batch, _ in batches), desc=f"texts  [{model.spec.spec}]", unit="txt",
                  disable=not progress, dynamic_ncols=True) as bar:
            for batch, width in batches:
                rows = unit_text[batch]
                if width is None:
                    embeddings = model.encode_token_rows(tokens.token_lists(rows)).numpy()
                else:
                    embeddings = model.encode_tokens(torch.from_numpy(tokens.rows(rows, width)),
                                                     tokens.lengths[rows]).numpy()
                collector.add(batch, embeddings)
                store.add([keys[u] for u in batch], embeddings, tokens.facts.take(rows))
                bar.update(len(batch))
    if dist.is_main and tokens.cached is not None:
        without_facts = np.flatnonzero(found & ~tokens.cached[unit_text])
        if len(without_facts):
            store.add([keys[u] for u in without_facts], collector.matrix[without_facts],
                      tokens.facts.take(unit_text[without_facts]))
    store.flush()
    matrix = collector.finish()
    if not dist.is_main:
        return None
    return matrix if matrix is not None else np.zeros((0, 1), np.float32)


def embed_text_units(model: "VisionLanguageModel", texts: List[str], store: ShardStore, batch_size: int,
                     progress: bool = True, units_of=None, dist: Dist = SOLO):
    """(TokenTable, unit embeddings, unit_text, unit_width) of `texts` through the cache.
    Units are each text at the model's default padding, or `units_of(tokens)` ->
    (unit_text, unit_width) where they depend on token lengths. Texts whose token facts
    the cache holds are not tokenised (when each text is a unit, their facts and
    embeddings come in one pass over the shards). Under several ranks the main rank
    reads the cache and gets the embeddings (the others get None); where the units
    depend on lengths, every rank needs them all, so every text is tokenised."""
    digests = [text_key(text, 0) for text in texts]
    one_unit_per_text = units_of is None
    if dist.is_main:
        found, matrix, facts, known = store.fill_with_facts(digests if one_unit_per_text else [], digests)
    else:
        found, matrix, facts, known = None, None, TokenFacts.empty(len(texts)), np.zeros(len(texts), bool)
    tokens = TokenTable(facts, known)
    unknown = ~known if one_unit_per_text or not dist.distributed else np.ones(len(texts), bool)
    tokens.tokenise(model, texts, np.flatnonzero(dist.broadcast_mask(unknown, len(texts))), progress, dist)
    if one_unit_per_text:
        unit_text, unit_width = np.arange(len(texts)), np.zeros(len(texts), np.int64)
        cached = (digests, found, matrix)  # each text's unit key is its digest
    else:
        (unit_text, unit_width), cached = units_of(tokens), None
    embeddings = encode_text_units(model, texts, tokens, unit_text, unit_width, store, batch_size, progress, cached,
                                   dist)
    return tokens, embeddings, unit_text, unit_width


def cache_stores(model: "VisionLanguageModel", settings: EvalSettings, dist: Dist = SOLO):
    """(image store, text store) of `model` under `settings.cache_dir` (stores that keep
    nothing when the cache is off), keyed by everything that changes an embedding.
    Under several ranks each rank's shards carry its rank and only the main rank
    writes `settings.json`."""
    # Named by the spec's own tag, not the run's: a model finds its cache whatever a run calls it.
    folder, keyed_settings = cache_folder(settings.cache_dir, model.spec.default_tag,
                                          {**model.settings(), "device": model.device.split(":")[0]})
    owned_settings = keyed_settings if dist.is_main else None
    return (ShardStore(folder, "images", settings.cache_shard_rows, owned_settings, dist.writer),
            ShardStore(folder, "texts", settings.cache_shard_rows, owned_settings, dist.writer))


def embed_images(model: "VisionLanguageModel", paths: List[str], settings: EvalSettings, dist: Dist = SOLO):
    """Unit embeddings [len(paths), D] of image files through the cache (NaN rows for
    images that failed) and {index: reason} for the failures; under several ranks the
    ranks share the work and the others get (None, {})."""
    image_store, _ = cache_stores(model, settings, dist)
    return encode_images(model, paths, image_store, settings.batch_size, settings.workers,
                         settings.progress and dist.is_main, dist)


def embed_texts(model: "VisionLanguageModel", texts: List[str], settings: EvalSettings, dist: Dist = SOLO):
    """Unit embeddings [len(texts), D] of distinct texts through the cache, each at the
    model's default padding; under several ranks the ranks share the work and the
    others get None."""
    _, text_store = cache_stores(model, settings, dist)
    return embed_text_units(model, texts, text_store, settings.text_batch_size, settings.progress and dist.is_main,
                            dist=dist)[1]
