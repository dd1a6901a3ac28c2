"""The scoring plan: which (image, caption, variant) pairs a script scores, read from a
perturbed JSONL in one streaming pass into integer arrays.

A script says what to score through one callback, `variant_groups(caption)`, that gets
a `Caption` (the record, the caption's index and text, and where it came from for error
messages) and returns its variant groups: lists of (text, kind) that the release
encoded in one call (which matters only for `--siglip-padding longest`).

Pair kinds follow one grammar, `ROLE` or `ROLE:LABEL`: the role says how a script uses
the pair (`same`, `diff`, `type`, `flip`, `order`, `swap`), the label refines it (a flip
type, a paraphrase kind, a shuffle type). `split_kind` is the one parser of it.
"""
from __future__ import annotations

import array
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from lgip.io import InputError, check_captions, iter_jsonl, resolve_image_path, where

VariantGroups = List[List[Tuple[str, str]]]
TYPED_FLIP_PREFIX = "diff_caps_"
CAPTIONS_PER_RECORD = 5  # the release's records hold COCO's first five captions


def split_kind(kind: str) -> Tuple[str, str]:
    """`"flip:para+color"` -> `("flip", "para+color")`; `"same"` -> `("same", "")`."""
    role, _, label = kind.partition(":")
    return role, label


class Caption:
    """One caption of one record: `text`, `index` (its key in the record's tables, a
    string as the JSONL has it), the `record` itself, and `path`/`line` for errors."""

    __slots__ = ("record", "index", "text", "path", "line")

    def __init__(self, record: Dict[str, Any], index: str, text: str, path: str, line: int):
        self.record, self.index, self.text, self.path, self.line = record, index, text, path, line

    def where(self) -> str:
        return where(self.path, self.line)

    def strings(self, key: str, text_field: str = "") -> List[str]:
        """`record[key][index]` as a list of strings ([] when absent). With `text_field`,
        the items are objects and their `text_field` is taken. InputError on any other shape."""
        table = self.record.get(key)
        if table is None:
            return []
        if not isinstance(table, dict):
            raise InputError(f"{self.where()}: '{key}' must be an object keyed by caption index, "
                             f"got {type(table).__name__}")
        items = table.get(self.index, [])
        if not isinstance(items, list):
            raise InputError(f"{self.where()}: '{key}'['{self.index}'] must be a list, got {type(items).__name__}")
        texts = []
        for position, item in enumerate(items):
            if text_field:
                item = item.get(text_field) if isinstance(item, dict) else None
            if not isinstance(item, str):
                wanted = f"an object with a string '{text_field}'" if text_field else "a string"
                raise InputError(f"{self.where()}: '{key}'['{self.index}'][{position}] must be {wanted}")
            texts.append(item)
        return texts

    def typed(self, key: str, type_field: str) -> List[Tuple[str, str]]:
        """(text, type) of the objects in `record[key][index]`."""
        return list(zip(self.strings(key, text_field="text"), self.strings(key, text_field=type_field)))

    def flip_types(self) -> List[str]:
        """The flip types this record lists, from its `diff_caps_<type>` keys, in order."""
        return [key[len(TYPED_FLIP_PREFIX):] for key in self.record if key.startswith(TYPED_FLIP_PREFIX)]

    def flips(self) -> List[Tuple[str, str]]:
        """The caption's flips, each once, as (text, type): `diff_caps[index]` then any
        flip only a typed key lists; the type from the first `diff_caps_<type>` key that
        lists the text, `all` when none does."""
        flip_type: Dict[str, str] = {}
        for typed in self.flip_types():
            for text in self.strings(TYPED_FLIP_PREFIX + typed):
                flip_type.setdefault(text, typed)
        flips = self.strings("diff_caps")
        flips += [text for text in flip_type if text not in set(flips)]
        return [(text, flip_type.get(text, "all")) for text in flips]

    def paraphrase_kinds(self, fallback: Callable[[str], str]) -> List[Tuple[str, str]]:
        """(paraphrase, kind) from `same_caps` and `same_caps_kind`; where the kinds are
        missing or do not line up, `fallback(text)` names each kind."""
        paraphrases = self.strings("same_caps")
        kinds = self.strings("same_caps_kind")
        if len(kinds) != len(paraphrases):
            kinds = [fallback(text) for text in paraphrases]
        return list(zip(paraphrases, kinds))


class PairPlan:
    """Every pair one script scores, as integer arrays, built by streaming the JSONL once.

    Records -> images (unique resolved paths); captions (one row per record caption);
    pairs (one row per caption variant, pointing at its caption row). Texts are interned:
    `texts` holds each unique string once. Padding groups follow the release's encode
    calls, for `--siglip-padding longest`."""

    def __init__(self):
        self.images: List[str] = []
        self.image_lines: List[int] = []
        self.record_image_id: List[str] = []  # the record's `image_id`, for per-pair dumps
        self._image_index: Dict[str, int] = {}
        self.texts: List[str] = []
        self._text_index: Dict[str, int] = {}
        self.kinds: List[str] = []
        self._kind_index: Dict[str, int] = {}
        self.record_image = array.array("i")
        self.record_line = array.array("i")
        self.caption_record = array.array("i")
        self.caption_index = array.array("h")
        self.caption_text = array.array("i")
        self.caption_group = array.array("i")
        self.pair_caption = array.array("i")
        self.pair_text = array.array("i")
        self.pair_kind = array.array("h")
        self.pair_group = array.array("i")
        self.num_groups = 0
        self.source_path: Optional[str] = None  # the JSONL, for FILE:LINE in messages
        # Lines of records with fewer than CAPTIONS_PER_RECORD captions, and (line,
        # caption index) of empty captions: scored as given, counted and reported.
        self.short_records: List[int] = []
        self.empty_captions: List[Tuple[int, int]] = []

    def _intern_text(self, text: str) -> int:
        index = self._text_index.get(text)
        if index is None:
            index = self._text_index[text] = len(self.texts)
            self.texts.append(text)
        return index

    def kind_code(self, kind: str) -> int:
        code = self._kind_index.get(kind)
        if code is None:
            code = self._kind_index[kind] = len(self.kinds)
            self.kinds.append(kind)
        return code

    def add_record(self, line_no: int, image_path: str, captions: List[str], groups_per_caption: List[VariantGroups],
                   image_id: Any = None):
        image = self._image_index.get(image_path)
        if image is None:
            image = self._image_index[image_path] = len(self.images)
            self.images.append(image_path)
            self.image_lines.append(line_no)
        record = len(self.record_image)
        self.record_image.append(image)
        self.record_line.append(line_no)
        self.record_image_id.append("" if image_id is None else str(image_id))
        caption_group = self._new_group()
        for index, (caption, groups) in enumerate(zip(captions, groups_per_caption)):
            caption_row = len(self.caption_record)
            self.caption_record.append(record)
            self.caption_index.append(index)
            self.caption_text.append(self._intern_text(caption))
            self.caption_group.append(caption_group)
            for group in groups:
                if not group:
                    continue
                group_id = self._new_group()
                for text, kind in group:
                    self.pair_caption.append(caption_row)
                    self.pair_text.append(self._intern_text(text))
                    self.pair_kind.append(self.kind_code(kind))
                    self.pair_group.append(group_id)

    def _new_group(self) -> int:
        self.num_groups += 1
        return self.num_groups - 1

    def finish(self) -> "PairPlan":
        """Turn the growing arrays into numpy arrays and drop the lookup tables."""
        for name in ("record_image", "record_line", "caption_record", "caption_index", "caption_text", "caption_group",
                     "pair_caption", "pair_text", "pair_kind", "pair_group"):
            setattr(self, name, np.frombuffer(getattr(self, name), dtype=getattr(self, name).typecode).astype(np.int64))
        self._image_index = self._text_index = None
        return self

    @property
    def num_records(self) -> int:
        return len(self.record_image)

    def pairs_of(self, *kinds: str):
        """Boolean mask of the pairs whose kind is one of `kinds`, where a bare role
        stands for every label of it (`"diff"` matches `diff` and `diff:color`)."""
        codes = [code for code, kind in enumerate(self.kinds)
                 if any(kind == wanted or (":" not in wanted and split_kind(kind)[0] == wanted) for wanted in kinds)]
        return np.isin(self.pair_kind, codes)

    def labels_of(self, role: str) -> Dict[str, int]:
        """{label: kind code} of the kinds `role:label` in the plan, in first-seen order."""
        return {label: code for code, (kind_role, label) in enumerate(map(split_kind, self.kinds))
                if kind_role == role and label}

    def pair_labels(self, pairs) -> np.ndarray:
        """The label of each pair in `pairs` (indices or mask), as an object array."""
        labels = np.array([split_kind(kind)[1] for kind in self.kinds] or [""], dtype=object)
        return labels[self.pair_kind[pairs]]


def build_plan(jsonl_path: str, variant_groups: Callable[[Caption], VariantGroups],
               limit: Optional[int] = None, strict: bool = False) -> PairPlan:
    """Stream the JSONL and record every pair `variant_groups(caption)` names for each
    caption. Bad records raise InputError with file and line. Records with fewer than
    five captions and empty captions are scored and counted (`short_records`,
    `empty_captions`); with `strict` the first of them is an InputError."""
    plan = PairPlan()
    plan.source_path = jsonl_path
    for line_no, record in iter_jsonl(jsonl_path):
        if limit is not None and plan.num_records >= limit:
            break
        image_path = record.get("image_path")
        if not isinstance(image_path, str) or not image_path:
            raise InputError(f"{where(jsonl_path, line_no)}: record has no 'image_path' string")
        captions = check_captions(record, jsonl_path, line_no)
        if len(captions) < CAPTIONS_PER_RECORD:
            if strict:
                raise InputError(f"{where(jsonl_path, line_no)}: record has {len(captions)} caption(s), fewer than "
                                 f"{CAPTIONS_PER_RECORD} (--strict)")
            plan.short_records.append(line_no)
        for index, caption in enumerate(captions):
            if not caption.strip():
                if strict:
                    raise InputError(f"{where(jsonl_path, line_no)}: caption {index} is empty (--strict)")
                plan.empty_captions.append((line_no, index))
        groups = [variant_groups(Caption(record, str(index), text, jsonl_path, line_no))
                  for index, text in enumerate(captions)]
        plan.add_record(line_no, resolve_image_path(image_path, jsonl_path), captions, groups, record.get("image_id"))
    return plan.finish()
