"""Compositional JSONL x models -> word-order, swap and hard-positive metrics:
`<input stem>__COMPOSITIONAL_<model_tag>.metrics.json` per model.

Three questions, one run, the same engine and embedding cache as the LGIP scripts:
- order (ARO's COCO-Order): Precision@1 of the normalised caption among itself and its
  shuffles (a tie counts against the caption), and per shuffle type the pairwise
  accuracy caption > shuffle;
- swaps: pairwise accuracy caption > swap, per swap type (attribute, relation);
- hard-positive triples (Kamath et al., "The Hard Positive Truth"): for every caption c,
  paraphrase p (`same_caps`) and hard negative n (`diff_caps`, `swap_caps`) of the same
  caption, original accuracy s(c) > s(n), augmented accuracy s(c) > s(n) and
  s(p) > s(n), and brittleness, the share of triples where n scores between c and p;
  by paraphrase kind (`same_caps_kind`) and negative type (flip type, swap type).
Each also as a blind baseline: the image replaced by the mean image embedding of the
run, so the text alone decides. Headline numbers get 95% bootstrap intervals
(resampling images); every number has its count.

Make the input with make_compositional_perturb.py (on a perturbed file, for triples).

On several GPUs or machines, run it under torchrun (or srun); no other change:

    torchrun --standalone --nproc-per-node 8 run_compositional.py      # ranks share each model
    torchrun --standalone --nproc-per-node 8 run_compositional.py --shard-models  # whole models per rank
"""
import os

import numpy as np

from lgip.engine import record_ids
from lgip.io import InputError
from lgip.perturb import ORDER_TYPES, SWAP_TYPES
from lgip.stats import mean_or_none
from lgip_common import (PAPER_MODELS, check_run_outputs, default_workers, evaluate, evaluation_arguments, launch,
                         print_metrics, run_cli, write_metric_file)

_DIR = os.path.dirname(os.path.abspath(__file__))
JSONL_PATH = os.path.join(_DIR, "rebuttal_enhanced_lgip_coco_native5_train2017_with_fliptypes_with_compositional.jsonl")
MODELS = list(PAPER_MODELS)
DEVICE = "auto"
PRECISION = "fp32"
BATCH_SIZE = 32
TEXT_BATCH_SIZE = 256
WORKERS = default_workers()
BOOTSTRAP = 1000
SEED = 0
HEADLINE = ["order.precision_at_1", "order.pairwise_accuracy", "swaps.accuracy", "triples.original_accuracy",
            "triples.augmented_accuracy", "triples.brittleness"]


# ---------------------------------------------------------------------------
# What is scored
# ---------------------------------------------------------------------------

def order_original(caption):
    """`order_orig[index]`: the normalised caption the shuffles are compared with."""
    table = caption.record.get("order_orig")
    text = table.get(caption.index) if isinstance(table, dict) else None
    if not isinstance(text, str):
        raise InputError(f"{caption.where()}: 'order_caps'['{caption.index}'] has shuffles but "
                         f"'order_orig'['{caption.index}'] is not a string (make the file with "
                         f"make_compositional_perturb.py)")
    return text


def variant_groups(caption):
    """The normalised caption and its shuffles; the swaps; the paraphrases (by kind);
    the flips (each once, typed; `all` when untyped)."""
    if "order_caps" not in caption.record or "swap_caps" not in caption.record:
        raise InputError(f"{caption.where()}: record has no 'order_caps'/'swap_caps'; run "
                         f"make_compositional_perturb.py on this file first")
    shuffles = caption.typed("order_caps", "order_type")
    order = [(order_original(caption), "order:orig")] if shuffles else []
    order += [(text, f"order:{order_type}") for text, order_type in shuffles]
    swaps = [(text, f"swap:{swap_type}") for text, swap_type in caption.typed("swap_caps", "swap_type")]
    paraphrases = caption.paraphrase_kinds(lambda text: "all")
    return [order, swaps, [(text, f"same:{kind}") for text, kind in paraphrases],
            [(text, f"diff:{flip_type}") for text, flip_type in caption.flips()]]


# ---------------------------------------------------------------------------
# Metrics: array operations over index arrays
# ---------------------------------------------------------------------------

def accuracy(wins):
    return {"accuracy": mean_or_none(wins), "count": int(len(wins))}


def accuracy_by_label(scores, pairs, wins, prefix, labels, name, bootstrap):
    """{label: accuracy} of `wins` (one per pair in `pairs`) per pair kind
    `prefix:label`, each with its bootstrap interval."""
    by_label = {}
    for label, positions in pairs_by_label(scores.plan, pairs, prefix, labels).items():
        by_label[label] = accuracy(wins[positions])
        bootstrap.add(f"{name}.{label}.accuracy", wins[positions], record_ids(scores, pairs[positions]))
    return by_label


def pairs_by_label(plan, pairs, prefix, always=()):
    """{label: positions in `pairs`} for the pair kinds `prefix:label`: the labels in
    `always` first (reported even when empty), then the others sorted."""
    code_of = plan.labels_of(prefix)
    labels = list(always) + sorted(set(code_of) - set(always) - {"orig"})
    kinds = plan.pair_kind[pairs]
    return {label: np.flatnonzero(kinds == code_of.get(label, -1)) for label in labels}


def order_metrics(scores, pair_score, valid, name, bootstrap):
    """Precision@1 of the normalised caption among it and its shuffles, and pairwise
    accuracy per shuffle type; strict `>`: a tie counts against the caption."""
    plan = scores.plan
    originals = np.flatnonzero(plan.pairs_of("order:orig") & valid)
    shuffles = np.flatnonzero(plan.pairs_of("order") & ~plan.pairs_of("order:orig") & valid)
    original_of = np.full(len(plan.caption_record), -1, dtype=np.int64)
    original_of[plan.pair_caption[originals]] = originals
    versus = original_of[plan.pair_caption[shuffles]]
    wins = pair_score[versus] > pair_score[shuffles]
    best_shuffle = np.full(len(plan.caption_record), -np.inf)
    np.maximum.at(best_shuffle, plan.pair_caption[shuffles], pair_score[shuffles])
    ranked = originals[np.isfinite(best_shuffle[plan.pair_caption[originals]])]
    hits = pair_score[ranked] > best_shuffle[plan.pair_caption[ranked]]
    bootstrap.add(f"{name}.precision_at_1", hits, record_ids(scores, ranked))
    bootstrap.add(f"{name}.pairwise_accuracy", wins, record_ids(scores, shuffles))
    by_type = accuracy_by_label(scores, shuffles, wins, "order", ORDER_TYPES, f"{name}.by_order_type", bootstrap)
    return {"precision_at_1": mean_or_none(hits), "num_captions": int(len(hits)),
            "pairwise_accuracy": mean_or_none(wins), "count": int(len(wins)), "by_order_type": by_type}


def swap_metrics(scores, caption_score, pair_score, valid, name, bootstrap):
    """Pairwise accuracy caption > swap, overall and per swap type."""
    plan = scores.plan
    swaps = np.flatnonzero(plan.pairs_of("swap") & valid)
    wins = caption_score[plan.pair_caption[swaps]] > pair_score[swaps]
    bootstrap.add(f"{name}.accuracy", wins, record_ids(scores, swaps))
    by_type = accuracy_by_label(scores, swaps, wins, "swap", SWAP_TYPES, f"{name}.by_swap_type", bootstrap)
    return {**accuracy(wins), "by_swap_type": by_type}


def caption_products(captions_a, items_a, captions_b, items_b, num_captions):
    """Every (a, b) with the same caption, as two aligned index arrays (a's order, then b's)."""
    order_a, order_b = np.argsort(captions_a, kind="stable"), np.argsort(captions_b, kind="stable")
    items_a, items_b, captions_a = items_a[order_a], items_b[order_b], captions_a[order_a]
    per_caption_b = np.bincount(captions_b, minlength=num_captions)
    first_b = np.cumsum(per_caption_b) - per_caption_b
    repeats = per_caption_b[captions_a]
    left = np.repeat(items_a, repeats)
    offsets = np.arange(len(left)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    right = items_b[np.repeat(first_b[captions_a], repeats) + offsets]
    return left, right


def triple_summary(original, augmented, brittle):
    return {"count": int(len(original)), "original_accuracy": mean_or_none(original),
            "augmented_accuracy": mean_or_none(augmented), "brittleness": mean_or_none(brittle)}


def triple_metrics(scores, caption_score, pair_score, valid, name, bootstrap):
    """Every (caption, paraphrase, hard negative) of one caption: original accuracy,
    augmented accuracy, brittleness; by paraphrase kind and by negative type."""
    plan = scores.plan
    paraphrases = np.flatnonzero(plan.pairs_of("same") & valid)
    negatives = np.flatnonzero(plan.pairs_of("diff", "swap") & valid)
    para, neg = caption_products(plan.pair_caption[paraphrases], paraphrases, plan.pair_caption[negatives], negatives,
                                 len(plan.caption_record))
    s_c, s_p, s_n = caption_score[plan.pair_caption[para]], pair_score[para], pair_score[neg]
    original = s_c > s_n
    augmented = original & (s_p > s_n)
    brittle = (original & (s_n > s_p)) | ((s_p > s_n) & (s_n > s_c))
    records = record_ids(scores, para)
    for metric, values in [("original_accuracy", original), ("augmented_accuracy", augmented), ("brittleness", brittle)]:
        bootstrap.add(f"{name}.{metric}", values, records)
    groups = {"by_paraphrase_kind": pairs_by_label(plan, para, "same"),
              "by_negative_type": {**pairs_by_label(plan, neg, "diff"), **pairs_by_label(plan, neg, "swap", SWAP_TYPES)}}
    result = triple_summary(original, augmented, brittle)
    for group, members in groups.items():
        result[group] = {label: triple_summary(original[at], augmented[at], brittle[at]) for label, at in members.items()}
    return result


def probe_metrics(scores, caption_score, pair_score, name_prefix, bootstrap):
    valid = scores.pair_valid
    return {"order": order_metrics(scores, pair_score, valid, f"{name_prefix}order", bootstrap),
            "swaps": swap_metrics(scores, caption_score, pair_score, valid, f"{name_prefix}swaps", bootstrap),
            "triples": triple_metrics(scores, caption_score, pair_score, valid, f"{name_prefix}triples", bootstrap)}


def blind_scores(scores):
    """Caption and pair scores against the mean image embedding of the run (the mean of
    the valid images' L2-normalised embeddings, normalised again): text alone."""
    images = np.unique(scores.plan.record_image[scores.record_valid])
    mean = scores.image_embeddings[images].astype(np.float64).mean(axis=0)
    mean = (mean / np.linalg.norm(mean)).astype(np.float32)
    per_unit = scores.text_embeddings @ mean
    return per_unit[scores.caption_unit], per_unit[scores.pair_unit]


def compositional_metrics(scores, bootstrap):
    blind_caption, blind_pair = blind_scores(scores)
    return {
        "num_samples": scores.num_samples(),
        **probe_metrics(scores, scores.caption_score, scores.pair_score, "", bootstrap),
        "blind": probe_metrics(scores, blind_caption, blind_pair, "blind.", bootstrap),
    }


def main():
    parser = evaluation_arguments(__doc__, globals())
    args = parser.parse_args()
    outputs = check_run_outputs(args, per_model="__COMPOSITIONAL_{tag}.metrics.json")
    with launch(args) as dist:
        for metrics in evaluate(args, variant_groups, compositional_metrics, "run_compositional.py", outputs, dist):
            print_metrics(metrics, HEADLINE + [f"blind.{key}" for key in HEADLINE])
            write_metric_file(outputs.per_model_path(metrics["model_tag"]), metrics)


if __name__ == "__main__":
    run_cli(main)
