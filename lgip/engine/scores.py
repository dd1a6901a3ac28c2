"""Scores: one model's cosine similarity for every caption and pair of a plan, from
the embeddings of its unique images and texts, and the facts every metric file reports
beside its metrics (skipped images, truncated texts, trivially invariant pairs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional

import numpy as np

from lgip.engine.distributed import SOLO, Dist
from lgip.engine.embed import TokenTable, cache_stores, embed_text_units, encode_images
from lgip.engine.plan import PairPlan
from lgip.engine.settings import EvalSettings
from lgip.io import InputError, where
from lgip.retrieval import retrieval_recalls

if TYPE_CHECKING:
    from lgip.models.base import VisionLanguageModel

def rowwise_dot(left, left_rows, right, right_rows, chunk: int = 1 << 16):
    """dot(left[left_rows[k]], right[right_rows[k]]) for every k, in chunks (float32)."""
    out = np.empty(len(left_rows), dtype=np.float32)
    for start in range(0, len(left_rows), chunk):
        stop = start + chunk
        out[start:stop] = np.einsum("ij,ij->i", left[left_rows[start:stop]], right[right_rows[start:stop]])
    return out


@dataclass
class Scores:
    """One model's scores over a plan. `caption_score[c]` = cos(image, caption c);
    `pair_score[p]` = cos(image, variant p); `pair_base[p]` = its caption's score.
    `pair_valid`/`record_valid` drop records whose image failed or that have no caption."""
    plan: PairPlan
    caption_score: Any
    pair_score: Any
    pair_base: Any
    pair_record: Any
    pair_valid: Any
    record_valid: Any
    image_embeddings: Any
    text_embeddings: Any
    caption_unit: Any
    pair_unit: Any
    tokens: TokenTable
    failures: Dict[int, str]

    def pair_text_cosine(self):
        """cos(text(caption), text(variant)) per pair, from the same text tower."""
        return rowwise_dot(self.text_embeddings, self.caption_unit[self.plan.pair_caption],
                           self.text_embeddings, self.pair_unit)

    def retrieval(self) -> Dict[str, Any]:
        """Retrieval recall@k over the valid images and their original captions."""
        valid_captions = np.flatnonzero(self.record_valid[self.plan.caption_record])
        compact = np.cumsum(self.record_valid) - 1
        return retrieval_recalls(self.image_embeddings[self.plan.record_image[self.record_valid]],
                                 self.text_embeddings[self.caption_unit[valid_captions]],
                                 compact[self.plan.caption_record[valid_captions]])

    def num_samples(self) -> int:
        return int(self.record_valid.sum())


def text_units(plan: PairPlan, tokens: TokenTable, longest_padding: bool):
    """(caption_unit, pair_unit, unit_text, unit_width). Normally a unit is a text. With
    longest padding (the release's SigLIP batches), a unit is a text at the width of the
    longest text of its group, since the padding changes the embedding."""
    if not longest_padding:
        return plan.caption_text, plan.pair_text, np.arange(len(plan.texts)), np.zeros(len(plan.texts), np.int64)
    group_width = np.zeros(plan.num_groups, dtype=np.int64)
    np.maximum.at(group_width, plan.caption_group, tokens.lengths[plan.caption_text])
    np.maximum.at(group_width, plan.pair_group, tokens.lengths[plan.pair_text])
    width_span = int(tokens.lengths.max(initial=0)) + 1
    caption_code = plan.caption_text * width_span + group_width[plan.caption_group]
    pair_code = plan.pair_text * width_span + group_width[plan.pair_group]
    unit_codes, inverse = np.unique(np.concatenate([caption_code, pair_code]), return_inverse=True)
    caption_unit, pair_unit = inverse[: len(caption_code)], inverse[len(caption_code):]
    return caption_unit, pair_unit, unit_codes // width_span, unit_codes % width_span


def score_plan(model: "VisionLanguageModel", plan: PairPlan, settings: EvalSettings,
               timings: Optional[Dict[str, float]] = None, dist: Dist = SOLO) -> Optional[Scores]:
    """Encode what the plan needs (through the cache) and score every caption and pair.
    `model` may be a stand-in that loads the model only when something is missing.
    Under several ranks every rank encodes its share and only the main rank gets the
    Scores; the others get None."""
    timings = {} if timings is None else timings
    image_store, text_store = cache_stores(model, settings, dist)
    progress = settings.progress and dist.is_main
    started = time.perf_counter()
    image_embeddings, failures = encode_images(model, plan.images, image_store, settings.batch_size, settings.workers,
                                               progress, dist)
    timings["images"] = time.perf_counter() - started
    if failures and settings.strict:  # before a single text is encoded
        raise InputError(image_failures_message(plan, failures) + f"; {len(failures)} image(s) failed in all")
    if plan.images and len(failures) == len(plan.images):
        first_index, first_reason = min(failures.items())
        raise InputError(f"{plan.images[first_index]}: none of the {len(plan.images)} images could be read "
                         f"(first: {first_reason}); is image_path relative to the JSONL's folder?")

    started = time.perf_counter()
    longest = getattr(model, "padding", "max_length") == "longest"
    units_of = (lambda tokens: text_units(plan, tokens, True)[2:]) if longest else None
    tokens, text_embeddings, unit_text, unit_width = embed_text_units(model, plan.texts, text_store,
                                                                      settings.text_batch_size, progress, units_of,
                                                                      dist)
    timings["texts"] = time.perf_counter() - started
    timings["tokenise"] = tokens.seconds  # part of "texts"
    if not dist.is_main:
        return None
    caption_unit, pair_unit, _, _ = text_units(plan, tokens, longest)

    started = time.perf_counter()
    image_ok = np.ones(len(plan.images), dtype=bool)
    image_ok[list(failures)] = False
    has_caption = np.bincount(plan.caption_record, minlength=plan.num_records) > 0
    record_valid = image_ok[plan.record_image] & has_caption
    caption_image = plan.record_image[plan.caption_record]
    caption_score = rowwise_dot(image_embeddings, caption_image, text_embeddings, caption_unit)
    pair_record = plan.caption_record[plan.pair_caption]
    pair_score = rowwise_dot(image_embeddings, plan.record_image[pair_record], text_embeddings, pair_unit)
    timings["scores"] = time.perf_counter() - started
    return Scores(plan, caption_score, pair_score, caption_score[plan.pair_caption], pair_record,
                  record_valid[pair_record], record_valid, image_embeddings, text_embeddings, caption_unit, pair_unit,
                  tokens, failures)


def image_failures_message(plan: PairPlan, failures: Dict[int, str]) -> str:
    """`FILE:LINE: image PATH could not be read (why)` for the first failed image."""
    first_index, first_reason = min(failures.items())
    place = where(plan.source_path, plan.image_lines[first_index]) if plan.source_path else plan.images[first_index]
    return f"{place}: image {plan.images[first_index]} could not be read ({first_reason})"


def record_ids(scores: Scores, mask):
    """Compact record numbers (0..valid records-1) of the masked pairs, for Bootstrap."""
    compact = np.cumsum(scores.record_valid) - 1
    return compact[scores.pair_record[mask]]


def trivially_invariant_pairs(scores: Scores, mask) -> int:
    """How many masked pairs tokenise to exactly the caption's token ids."""
    plan = scores.plan
    return int(scores.tokens.same_ids(plan.caption_text[plan.pair_caption[mask]], plan.pair_text[mask]).sum())


def run_facts(scores: Scores, paraphrase_mask) -> Dict[str, Any]:
    """What every metric JSON reports beside the metrics: skipped images, truncated
    texts, paraphrases that tokenise to the caption itself."""
    plan = scores.plan
    skipped = sorted(scores.failures.items())
    used_texts = np.unique(np.concatenate([plan.caption_text[scores.record_valid[plan.caption_record]],
                                           plan.pair_text[scores.pair_valid]]))
    return {
        "num_skipped_images": len(skipped),
        "skipped_images": [{"image_path": plan.images[i], "line": plan.image_lines[i], "reason": reason}
                           for i, reason in skipped[:20]],
        "num_truncated_texts": int(scores.tokens.truncated[used_texts].sum()),
        "num_trivially_invariant_pairs": trivially_invariant_pairs(scores, paraphrase_mask & scores.pair_valid),
        "num_records_with_few_captions": len(plan.short_records),
        "num_empty_captions": len(plan.empty_captions),
    }


RETRIEVAL_KS = (1, 5, 10)
