"""The examples behind the numbers, chosen by streaming `--dump-pairs` files.

A dump holds one row per scored pair (`lgip.engine.dump.PairDump.COLUMNS`) for every
model of a run; the paper's full run writes about 10 million. Nothing here loads a dump
whole: each file is read once, in chunks (`dumps.map_chunks`: on worker processes for a
large file), each chunk is reduced to a small summary (`summarize_chunk`), and what is
kept is
- per model and flip type, the K flips that beat their caption by the most (the most
  negative gap = caption score − flip score; only flips with gap < 0 qualify), and per
  model the K paraphrases that move the score most (largest |gap|), each in a heap of
  size K (a pair shown once per heap: its best-ranked occurrence, so two dumps that both
  hold it do not show it twice; ties go to the row read first);
- across models, per distinct flip (input line, image path, caption index, flip text) a
  float32 gap per model (NaN: that model did not score it). The flips every model gets
  wrong and those no model gets wrong are the complete rows with all gaps < 0, or none.
  A flip a model scored twice (two dumps hold it) counts with its last row read.

Kinds (`ROLE` or `ROLE:LABEL`, the grammar of `lgip.engine.plan.split_kind`): roles
`diff`, `type`, `flip` are flips, typed by the label (`all` when there is none); `same`
is a paraphrase; others (the compositional probes' `order`, `swap`) are skipped. Rows
whose gap is not finite are skipped.

Memory, for the cross-model join: a dict from a 64-bit hash of the flip's key (Python's
own hash, which the forked workers share) to its slot, about 100 bytes per distinct
flip, and the gap table, 4 bytes per flip and model (its rows double as it grows). The
paper's mix, about 555,000 distinct flips among 10 million rows of nine models, needs
about 95 MB; a dump of flips only (1.1 million) about 190 MB. Two distinct flips share
a slot only if their 64-bit hashes collide: odds of about 1 in 10^7 at a million flips.
The heaps hold K rows per (model, group). The texts of the few shared flips chosen are
read back in a second pass that stops as soon as it has seen them all (the first
model's rows hold every one), so it reads about one model's share of the first dump.
"""
from __future__ import annotations

import contextlib
import gc
import heapq
import operator
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lgip.engine.plan import split_kind
from lgip.io import InputError
from lgip.report.dumps import CHUNK_ROWS, Columns, float_column, map_chunks, worker_pool

DEFAULT_EXAMPLES = 12
FLIP_PREFIXES = ("diff", "type", "flip")
PARAPHRASE_PREFIX = "same"
UNTYPED_FLIP = "all"
KEY_COLUMNS = ("line", "image_path", "caption_index", "variant_text")  # one pair, across models and dumps

Group = Tuple[str, str, str]  # (model tag, "flip" or "paraphrase", flip type or "")


@dataclass
class Example:
    """One scored pair as the page shows it."""
    model_tag: str
    variant_kind: str
    line: str
    image_id: str
    image_path: str
    caption_index: str
    caption: str
    variant_text: str
    base_score: Optional[float]
    variant_score: Optional[float]
    gap: float
    dump: str  # the file it was read from (relative image paths are relative to its folder)
    row: int  # its data row in that file, 1 = the first after the header


@dataclass
class SharedFlip:
    """A flip every model scored: its texts (from the first row read) and each model's gap."""
    example: Example
    gaps: Dict[str, float]
    mean_gap: float


@dataclass
class GroupCounts:
    scored: int = 0
    flip_wins: int = 0  # flips only: pairs where the flip scored above the caption (gap < 0)


@dataclass
class ExampleSelection:
    """What `select_examples` found: examples best first, and the counts behind them."""
    k: int
    files: List[str]
    rows_read: int
    models: List[str]  # every model tag in the dumps, in the order first read
    flips: Dict[str, Dict[str, List[Example]]]  # model -> flip type -> worst flips
    paraphrases: Dict[str, List[Example]]  # model -> paraphrases that move the score most
    counts: Dict[Tuple[str, str, str], GroupCounts]  # (model, "flip"/"paraphrase", flip type or "")
    flip_models: List[str]  # the models that scored flips: "every model" means these
    shared_flips: int  # distinct flips every one of flip_models scored
    all_wrong_count: int
    none_wrong_count: int
    all_wrong: List[SharedFlip] = field(default_factory=list)  # most negative mean gap first
    none_wrong: List[SharedFlip] = field(default_factory=list)  # largest mean gap first


def kind_role(kind: str) -> Optional[Tuple[str, str]]:
    """("flip", flip type) or ("paraphrase", "") for a dump's variant kind; None for kinds
    the report does not show."""
    prefix, rest = split_kind(kind)
    if prefix == PARAPHRASE_PREFIX:
        return ("paraphrase", "")
    if prefix in FLIP_PREFIXES:
        return ("flip", rest or UNTYPED_FLIP)
    return None


class TopK:
    """The k best items by rank (a tuple; smaller is better; no two items share one), each
    key at most once (its best-ranked occurrence). A heap whose root is the worst kept."""

    def __init__(self, k: int):
        self.k = k
        self._heap: List[list] = []  # [negated rank, key, item]
        self._rank_of: Dict[Any, tuple] = {}

    def worst_primary(self) -> Optional[float]:
        """The first rank component of the worst item kept, once k are kept; else None."""
        return -self._heap[0][0][0] if len(self._heap) >= self.k else None

    def offer(self, rank: tuple, key, item) -> bool:
        """Keep `item` if it is among the k best. False only when it ranks below all k kept
        (so every item ranked after it will be refused too)."""
        negated = tuple(-part for part in rank)
        kept = self._rank_of.get(key)
        if kept is not None:  # the same pair again (two dumps hold it): keep its better row
            if rank < kept:
                for entry in self._heap:
                    if entry[1] == key:
                        entry[0], entry[2] = negated, item
                heapq.heapify(self._heap)
                self._rank_of[key] = rank
            return True
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, [negated, key, item])
        elif negated > self._heap[0][0]:
            del self._rank_of[self._heap[0][1]]
            heapq.heapreplace(self._heap, [negated, key, item])
        else:
            return False
        self._rank_of[key] = rank
        return True

    def best_first(self) -> list:
        return [item for _negated, _key, item in sorted(self._heap, reverse=True)]


def _optional_float(columns: Columns, name: str, index: int) -> Optional[float]:
    try:
        return float(columns[name][index]) if name in columns else None
    except (TypeError, ValueError):
        return None


def _example(columns: Columns, index: int, gap: float) -> Example:
    """Row `index` of the chunk; `dump` and `row` are filled in where the chunk's place in
    its file is known."""
    return Example(model_tag=columns["model_tag"][index], variant_kind=columns["variant_kind"][index],
                   line=columns["line"][index], image_id=columns["image_id"][index] if "image_id" in columns else "",
                   image_path=columns["image_path"][index], caption_index=columns["caption_index"][index],
                   caption=columns["caption"][index], variant_text=columns["variant_text"][index],
                   base_score=_optional_float(columns, "base_score", index),
                   variant_score=_optional_float(columns, "variant_score", index), gap=gap, dump="", row=index)


class _Numbering(dict):
    """key -> 0, 1, 2, ... in the order first looked up (`numbering[key]` adds a new key)."""

    def __missing__(self, key):
        code = self[key] = len(self)
        return code


def _key_hashes(columns: Columns, positions: np.ndarray) -> List[int]:
    """hash((line, image path, caption index, variant text)) of the rows at `positions`
    (the interpreter's string hash: the same in this process and its forked workers)."""
    if len(positions) == 0:
        return []
    if len(positions) == len(columns["gap"]):  # the whole chunk, the usual case
        key_columns = [columns[name] for name in KEY_COLUMNS]
    else:
        take = operator.itemgetter(*positions.tolist())
        key_columns = [take(columns[name]) if len(positions) > 1 else (take(columns[name]),) for name in KEY_COLUMNS]
    return list(map(hash, zip(*key_columns)))


@dataclass
class _Kinds:
    """A chunk's rows by (model tag, kind): codes per row, and per code its model and role."""
    codes: np.ndarray
    pairs: List[Tuple[str, str]]
    models: List[str]  # in the order first seen in the chunk
    roles: List[Optional[Tuple[str, str]]]

    @classmethod
    def of(cls, columns: Columns) -> "_Kinds":
        numbering = _Numbering()
        codes = np.fromiter(map(numbering.__getitem__, zip(columns["model_tag"], columns["variant_kind"])),
                            dtype=np.int64, count=len(columns["gap"]))
        pairs = list(numbering)
        return cls(codes, pairs, list(dict.fromkeys(model for model, _kind in pairs)),
                   [kind_role(kind) for _model, kind in pairs])

    def flip_rows(self, finite: np.ndarray) -> np.ndarray:
        is_flip = np.array([role is not None and role[0] == "flip" for role in self.roles])
        return np.flatnonzero(is_flip[self.codes] & finite)


@dataclass
class ChunkSummary:
    """What one chunk adds to the selection: small, and cheap to send from a worker."""
    rows: int
    models: List[str]
    # group -> (pairs scored, flips that beat their caption, [(primary rank, row offset, key, Example)] best first)
    groups: Dict[Group, Tuple[int, int, list]]
    flip_model: np.ndarray  # per flip row, in row order: its model's index in `models`
    flip_hashes: np.ndarray  # int64 hash of the flip's KEY_COLUMNS
    flip_gaps: np.ndarray  # float32


def _offer_rows(heap: TopK, columns: Columns, positions: np.ndarray, primary: np.ndarray, gaps: np.ndarray) -> None:
    """Offer rows to a chunk's heap best first (rank: primary, then row), until one is refused."""
    worst = heap.worst_primary()
    if worst is not None:  # a tie may still win on its row: the heap decides
        keep = primary <= worst
        positions, primary = positions[keep], primary[keep]
    key_columns = [columns[name] for name in KEY_COLUMNS]
    for order in np.argsort(primary, kind="stable"):
        index, value = int(positions[order]), float(primary[order])
        key = tuple(column[index] for column in key_columns)
        if not heap.offer((value, index), key, (value, index, key, _example(columns, index, float(gaps[index])))):
            break


def summarize_chunk(columns: Columns, k: int) -> ChunkSummary:
    """A chunk reduced to what the selection needs: per (model, role, flip type) the pairs
    scored, the flips that beat their caption and the k best rows as the heaps rank them
    (offsets within the chunk), and per flip row its key's hash, its model and its gap.
    Rows whose gap is not finite are left out."""
    gaps = float_column(columns["gap"], "gap")
    finite = np.isfinite(gaps)
    kinds = _Kinds.of(columns)
    groups: Dict[Group, list] = {}
    for code, ((model, _kind), role) in enumerate(zip(kinds.pairs, kinds.roles)):
        if role is None:
            continue
        positions = np.flatnonzero((kinds.codes == code) & finite) if len(kinds.pairs) > 1 else np.flatnonzero(finite)
        entry = groups.setdefault((model, role[0], role[1] if role[0] == "flip" else ""), [0, 0, TopK(k)])
        entry[0] += len(positions)
        if role[0] == "flip":
            positions = positions[gaps[positions] < 0]
            entry[1] += len(positions)
            primary = gaps[positions]
        else:
            primary = -np.abs(gaps[positions])
        _offer_rows(entry[2], columns, positions, primary, gaps)
    flip_rows = kinds.flip_rows(finite)
    model_index = np.array([kinds.models.index(model) for model, _kind in kinds.pairs], dtype=np.int64)
    return ChunkSummary(rows=len(gaps), models=kinds.models,
                        groups={group: (scored, wins, heap.best_first()) for group, (scored, wins, heap) in groups.items()},
                        flip_model=model_index[kinds.codes[flip_rows]],
                        flip_hashes=np.array(_key_hashes(columns, flip_rows), dtype=np.int64),
                        flip_gaps=gaps[flip_rows].astype(np.float32))


def find_flips_in_chunk(columns: Columns, wanted: frozenset) -> List[Tuple[int, int, Example]]:
    """[(row offset, key hash, Example)] for the chunk's flip rows whose key hash is in `wanted`."""
    gaps = float_column(columns["gap"], "gap")
    flip_rows = _Kinds.of(columns).flip_rows(np.isfinite(gaps))
    hashes = _key_hashes(columns, flip_rows)
    if not wanted.intersection(hashes):
        return []
    return [(int(index), key_hash, _example(columns, int(index), float(gaps[index])))
            for index, key_hash in zip(flip_rows, hashes) if key_hash in wanted]


@contextlib.contextmanager
def _collector_paused():
    """The cyclic garbage collector off while dumps are read: chunks hold no reference
    cycles, and the collector would walk every row of a chunk again and again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------------------
# The selection
# ---------------------------------------------------------------------------

class ExampleSelector:
    """Merges the chunks' summaries; `select(paths)` returns the ExampleSelection."""

    def __init__(self, k: int = DEFAULT_EXAMPLES, workers: Optional[int] = None, chunk_rows: int = CHUNK_ROWS):
        if k < 1:
            raise InputError(f"--examples {k}: expected at least 1")
        self.k, self.workers, self.chunk_rows = k, workers, chunk_rows
        self.rows_read = 0
        self.models: Dict[str, None] = {}  # every model tag, in order first seen
        self.flip_models: Dict[str, int] = {}  # model tag -> its column in the gap table
        self.heaps: Dict[Group, TopK] = {}
        self.counts: Dict[Group, GroupCounts] = {}
        self._slot_of = _Numbering()  # hash of a flip's KEY_COLUMNS -> its row in the gap table
        self._gaps = np.full((1 << 12, 4), np.nan, dtype=np.float32)

    def select(self, paths: Sequence[str]) -> ExampleSelection:
        """Read every dump once and choose the examples (plus one partial pass for the
        texts of the shared flips)."""
        with _collector_paused(), worker_pool(self.workers, paths) as pool:
            for file_index, path in enumerate(paths):
                for first_row, summary in map_chunks(path, summarize_chunk, (self.k,), pool, self.chunk_rows):
                    self._merge(file_index, path, first_row, summary)
            return self._result(list(paths), pool)

    def _merge(self, file_index: int, path: str, first_row: int, summary: ChunkSummary) -> None:
        self.models.update(dict.fromkeys(summary.models))
        for group, (scored, wins, candidates) in summary.groups.items():
            counts = self.counts.setdefault(group, GroupCounts())
            counts.scored += scored
            counts.flip_wins += wins
            heap = self.heaps.setdefault(group, TopK(self.k))
            for primary, offset, key, example in candidates:
                example.dump, example.row = path, first_row + offset
                if not heap.offer((primary, file_index, example.row), key, example):
                    break
        self.rows_read += summary.rows
        if not len(summary.flip_hashes):
            return
        column_of = np.full(len(summary.models), -1, dtype=np.int64)
        for index in dict.fromkeys(summary.flip_model.tolist()):  # models in the order their flips come
            column_of[index] = self.flip_models.setdefault(summary.models[index], len(self.flip_models))
        slots = np.fromiter(map(self._slot_of.__getitem__, summary.flip_hashes.tolist()), dtype=np.int64,
                            count=len(summary.flip_hashes))
        self._make_room(len(self._slot_of), len(self.flip_models))
        self._gaps[slots, column_of[summary.flip_model]] = summary.flip_gaps

    def _make_room(self, rows: int, columns: int) -> None:
        """Grow the gap table (NaN: not scored) to hold `rows` flips and `columns` models;
        rows double when they grow, so growing costs O(1) a flip on average."""
        old_rows, old_columns = self._gaps.shape
        if rows <= old_rows and columns <= old_columns:
            return
        grown = np.full((old_rows if rows <= old_rows else max(rows, 2 * old_rows), max(columns, old_columns)),
                        np.nan, dtype=np.float32)
        grown[:old_rows, :old_columns] = self._gaps
        self._gaps = grown

    def _result(self, paths: List[str], pool) -> ExampleSelection:
        flips: Dict[str, Dict[str, List[Example]]] = {}
        paraphrases: Dict[str, List[Example]] = {}
        for (model, role, flip_type), heap in self.heaps.items():
            if role == "flip":
                flips.setdefault(model, {})[flip_type] = heap.best_first()
            else:
                paraphrases[model] = heap.best_first()
        selection = ExampleSelection(k=self.k, files=paths, rows_read=self.rows_read, models=list(self.models),
                                     flips=flips, paraphrases=paraphrases, counts=self.counts,
                                     flip_models=list(self.flip_models), shared_flips=0, all_wrong_count=0,
                                     none_wrong_count=0)
        if len(self.flip_models) < 2:
            return selection
        gaps = self._gaps[:len(self._slot_of), :len(self.flip_models)]
        complete = ~np.isnan(gaps).any(axis=1)
        mean = np.where(complete, np.nan_to_num(gaps).mean(axis=1, dtype=np.float64), np.nan)
        all_wrong = np.flatnonzero(complete & (gaps < 0).all(axis=1))
        none_wrong = np.flatnonzero(complete & (gaps >= 0).all(axis=1))
        chosen_wrong = all_wrong[np.argsort(mean[all_wrong], kind="stable")[:self.k]]
        chosen_right = none_wrong[np.argsort(-mean[none_wrong], kind="stable")[:self.k]]
        selection.shared_flips = int(complete.sum())
        selection.all_wrong_count, selection.none_wrong_count = len(all_wrong), len(none_wrong)
        found = self._find_flips(paths, set(chosen_wrong.tolist()) | set(chosen_right.tolist()), pool)
        models = list(self.flip_models)
        for chosen, target in ((chosen_wrong, selection.all_wrong), (chosen_right, selection.none_wrong)):
            for slot in chosen.tolist():
                target.append(SharedFlip(example=found[slot], mean_gap=float(mean[slot]),
                                         gaps={model: float(gaps[slot, column]) for column, model in enumerate(models)}))
        return selection

    def _find_flips(self, paths: Sequence[str], slots: set, pool) -> Dict[int, Example]:
        """The first row of each flip in `slots`, read again from the dumps; stops as soon
        as all are found."""
        wanted = {key_hash: slot for key_hash, slot in self._slot_of.items() if slot in slots}
        found: Dict[int, Example] = {}
        for path in paths:
            for first_row, matches in map_chunks(path, find_flips_in_chunk, (frozenset(wanted),), pool,
                                                     self.chunk_rows):
                for offset, key_hash, example in matches:
                    if wanted[key_hash] not in found:
                        example.dump, example.row = path, first_row + offset
                        found[wanted[key_hash]] = example
                if len(found) == len(wanted):
                    return found
        return found


def select_examples(paths: Sequence[str], k: int = DEFAULT_EXAMPLES, workers: Optional[int] = None,
                    chunk_rows: int = CHUNK_ROWS) -> ExampleSelection:
    """Stream the dumps at `paths` and choose, per model, the K worst flips per flip type
    and the K paraphrases that move the score most, and across models up to K flips every
    model gets wrong and K no model gets wrong (see the module's docstring). `workers`:
    processes that parse a large CSV dump (default: the CPUs, at most 8; 1: none);
    `chunk_rows`: rows per chunk where this process reads."""
    return ExampleSelector(k, workers, chunk_rows).select(paths)
