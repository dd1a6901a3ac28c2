"""Rebuttal-enhanced JSONL x models -> the release's strength-aware LGIP analysis:
`<input stem>__ENHANCED_LGIP_analysis.json`, a list with one entry per model.

Each flip gets a strength, s = clip(0.5 * prior(type) + 0.5 * clip(1 - cos(text(caption),
text(flip)), 0, 1), 0, 1), and a weight max(1e-4, s); flips are binned weak / medium /
strong by the 25th and 75th percentiles of all strengths. Reported: invariance error
(global, simple vs advanced paraphrases, and per paraphrase kind), sensitivity
(unweighted and strength-weighted), and per flip type and bin: count, gap mean and
std, positive rate, weighted gap and positive rate.

Unlike the release: each flip is counted once (the release counted typed flips twice),
`combined_caps` (paraphrase + flip) are evaluated as types `para+<type>` against the
original caption, and `num_samples` counts images, not batches.

On several GPUs or machines, run it under torchrun (or srun); no other change:

    torchrun --standalone --nproc-per-node 8 rebuttal_enhanced_lgip_by_transformation.py
    torchrun --standalone --nproc-per-node 8 rebuttal_enhanced_lgip_by_transformation.py --shard-models
"""
import os

import numpy as np

from lgip.engine import record_ids
from lgip.stats import mean_or_none
from lgip_common import (PAPER_MODELS, check_run_outputs, default_workers, evaluate, evaluation_arguments,
                         gather_models, launch, print_metrics, run_cli, write_metric_file)

_DIR = os.path.dirname(os.path.abspath(__file__))
JSONL_PATH = os.path.join(_DIR, "rebuttal_enhanced_lgip_coco_native5_train2017_with_fliptypes.jsonl")
MODELS = list(PAPER_MODELS)
DEVICE = "auto"
PRECISION = "fp32"
BATCH_SIZE = 32
TEXT_BATCH_SIZE = 256
WORKERS = default_workers()
BOOTSTRAP = 1000
SEED = 0

# Strength: the release's type priors (human-perceived severity) blended with text distance.
TYPE_PRIOR = {"color": 0.25, "number": 0.55, "object": 1.00, "spatial": 0.80}
OTHER_TYPE_PRIOR = 0.60
ALPHA_TYPE = 0.5
MIN_WEIGHT = 1e-4
BIN_QUANTILES = (0.25, 0.75)
# The release's test for a "simple" paraphrase when a file carries no same_caps_kind.
SIMPLE_PHRASES = ("a photo of", "an image of", "a picture of", "in this image", "in the picture", "this image shows")
SIMPLE_KINDS = {"template", "prefix", "simple"}


def is_simple(text):
    return any(phrase in text.lower() for phrase in SIMPLE_PHRASES)


def variant_groups(caption):
    """Paraphrases (by kind), flips (each once, typed), combined edits. Groups follow
    the release's encode calls: simple paraphrases, advanced ones, all flips."""
    paraphrases = caption.paraphrase_kinds(lambda text: "simple" if is_simple(text) else "advanced")
    simple = [(text, f"same:{kind}") for text, kind in paraphrases if is_simple(text)]
    advanced = [(text, f"same:{kind}") for text, kind in paraphrases if not is_simple(text)]
    flips = [(text, f"flip:{flip_type}") for text, flip_type in caption.flips()]
    combined = [(text, f"flip:{kind}") for text, kind in caption.typed("combined_caps", "combined_type")]
    return [simple, advanced, flips, combined]


def sample_std(values):
    """Standard deviation with n-1 (the release's torch.std); 0.0 for one value, None for none."""
    if len(values) <= 1:
        return 0.0 if len(values) == 1 else None
    return float(np.std(values.astype(np.float64), ddof=1))


def weighted(values, weights):
    return float(np.sum(values * weights) / np.sum(weights)) if len(values) and np.sum(weights) > 0 else None


def bin_summary(gaps, weights):
    """The release's per-bin numbers."""
    return {"count": int(len(gaps)), "gap_mean": mean_or_none(gaps), "gap_std": sample_std(gaps),
            "pos_rate": mean_or_none(gaps > 0) if len(gaps) else None,
            "w_gap_mean": weighted(gaps, weights), "w_pos_rate": weighted((gaps > 0).astype(np.float64), weights)}


def strength_analysis(scores, bootstrap):
    plan = scores.plan
    valid = scores.pair_valid
    same = plan.pairs_of("same") & valid
    invariance = np.abs(scores.pair_base - scores.pair_score)
    same_kind = plan.pair_labels(same)
    simple_mask = np.isin(same_kind, list(SIMPLE_KINDS))

    all_flips = plan.pairs_of("flip") & valid
    pair_type = plan.pair_labels(all_flips)
    is_combined = np.array([t.startswith("para+") for t in pair_type], dtype=bool)
    gaps = (scores.pair_base - scores.pair_score)[all_flips]
    text_distance = np.clip(1.0 - scores.pair_text_cosine()[all_flips], 0.0, 1.0)
    prior = np.array([TYPE_PRIOR.get(t, OTHER_TYPE_PRIOR) for t in pair_type])
    strength = np.clip(ALPHA_TYPE * prior + (1.0 - ALPHA_TYPE) * text_distance, 0.0, 1.0)
    weights = np.maximum(MIN_WEIGHT, strength)

    single = ~is_combined
    q_low, q_high = ((float(np.quantile(strength[single], BIN_QUANTILES[0])),
                      float(np.quantile(strength[single], BIN_QUANTILES[1]))) if single.any() else (0.0, 1.0))
    bins = np.where(strength <= q_low, "weak", np.where(strength <= q_high, "medium", "strong"))

    flip_records = record_ids(scores, all_flips)
    same_records = record_ids(scores, same)
    bootstrap.add("global_invariance_error_mean", invariance[same], same_records)
    bootstrap.add("global_sensitivity.gap_mean", gaps[single], flip_records[single])
    bootstrap.add("global_sensitivity.pos_rate", gaps[single] > 0, flip_records[single])
    bootstrap.add("global_weighted_sensitivity.w_gap_mean", gaps[single], flip_records[single], weights[single])

    error_type_stats = {}
    preferred = ["color", "number", "object", "spatial", "all"]
    for flip_type in sorted(set(pair_type), key=lambda t: (t not in preferred, preferred.index(t) if t in preferred else 0, t)):
        of_type = pair_type == flip_type
        error_type_stats[flip_type] = {"overall": bin_summary(gaps[of_type], weights[of_type])}
        for bin_name in ("weak", "medium", "strong"):
            in_bin = of_type & (bins == bin_name)
            error_type_stats[flip_type][bin_name] = bin_summary(gaps[in_bin], weights[in_bin])
        bootstrap.add(f"error_type_stats.{flip_type}.gap_mean", gaps[of_type], flip_records[of_type])
        bootstrap.add(f"error_type_stats.{flip_type}.pos_rate", gaps[of_type] > 0, flip_records[of_type])

    single_gaps = gaps[single]
    return {
        "num_samples": scores.num_samples(),
        "global_invariance_error_mean": mean_or_none(invariance[same]),
        "paraphrase_simple_inv_error_mean": mean_or_none(invariance[same][simple_mask]),
        "paraphrase_advanced_inv_error_mean": mean_or_none(invariance[same][~simple_mask]),
        "paraphrase_simple_count": int(simple_mask.sum()),
        "paraphrase_advanced_count": int((~simple_mask).sum()),
        "paraphrase_kind_inv_error": {kind: {"count": int((same_kind == kind).sum()),
                                             "inv_error_mean": mean_or_none(invariance[same][same_kind == kind])}
                                      for kind in sorted(set(same_kind))},
        "global_sensitivity": {"count": int(len(single_gaps)), "gap_mean": mean_or_none(single_gaps),
                               "gap_std": sample_std(single_gaps),
                               "pos_rate": mean_or_none(single_gaps > 0) if len(single_gaps) else None},
        "global_strength": {"count": int(single.sum()), "strength_mean": mean_or_none(strength[single]),
                            "q_low": q_low, "q_high": q_high},
        "global_weighted_sensitivity": {"count": int(single.sum()), "w_gap_mean": weighted(single_gaps, weights[single]),
                                        "w_pos_rate": weighted((single_gaps > 0).astype(np.float64), weights[single])},
        "combined_sensitivity": bin_summary(gaps[is_combined], weights[is_combined]),
        "error_type_stats": error_type_stats,
    }


def report(result):
    """A model's headline numbers, as a few lines."""
    print_metrics(result, ["global_invariance_error_mean", "paraphrase_simple_inv_error_mean",
                           "paraphrase_advanced_inv_error_mean"])
    sensitivity, strength = result["global_sensitivity"], result["global_strength"]
    print(f"  sensitivity: gap {sensitivity['gap_mean']}, pos rate {sensitivity['pos_rate']}, n={sensitivity['count']}; "
          f"strength bins q25={strength['q_low']:.4f} q75={strength['q_high']:.4f}")
    for flip_type, stats in result["error_type_stats"].items():
        overall = stats["overall"]
        print(f"  [{flip_type}] n={overall['count']} gap={overall['gap_mean']} pos={overall['pos_rate']} "
              f"w_gap={overall['w_gap_mean']}")


def main():
    parser = evaluation_arguments(__doc__, globals())
    args = parser.parse_args()
    outputs = check_run_outputs(args, combined="__ENHANCED_LGIP_analysis.json")
    with launch(args) as dist:
        all_results = []
        for result in evaluate(args, variant_groups, strength_analysis, "rebuttal_enhanced_lgip_by_transformation.py",
                               outputs, dist):
            report(result)
            all_results.append(result)
        all_results = gather_models(args, dist, all_results)
        if dist.is_main:
            write_metric_file(outputs.combined_path, all_results)


if __name__ == "__main__":
    run_cli(main)
