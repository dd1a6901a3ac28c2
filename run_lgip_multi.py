"""Perturbed JSONL x models -> LGIP metrics: invariance error (how far a paraphrase's
score moves from the caption's) and sensitivity gap and positive rate (how far, and
how often, a one-word flip scores below the caption).

Writes `<input stem>__LGIP_<model_tag>.metrics.json` per model and
`<input stem>__LGIP_ALL.metrics.json` (a list), with the release's keys plus 95%
bootstrap intervals, standard image<->text retrieval recall@1/5/10 over the same
images and original captions, run facts and a config block. Every unique image and text is
encoded once per model, through the embedding cache shared by all scripts.

On several GPUs or machines, run it under torchrun (or srun); no other change:

    torchrun --standalone --nproc-per-node 8 run_lgip_multi.py      # ranks share each model
    torchrun --standalone --nproc-per-node 8 run_lgip_multi.py --shard-models  # whole models per rank
    python run_lgip_multi.py --merge-only   # rebuild _ALL from the per-model files
"""
import os

from lgip.engine import record_ids
from lgip.stats import gap_summary, mean_or_none
from lgip_common import (PAPER_MODELS, check_run_outputs, default_workers, evaluate, evaluation_arguments,
                         gather_models, launch, merge_model_files, print_metrics, run_cli, write_metric_file)

_DIR = os.path.dirname(os.path.abspath(__file__))
JSONL_PATH = os.path.join(_DIR, "lgip_coco_native5_train2017_with_perturb.jsonl")
MODELS = list(PAPER_MODELS)
DEVICE = "auto"
PRECISION = "fp32"
BATCH_SIZE = 32  # images per batch
TEXT_BATCH_SIZE = 256
WORKERS = default_workers()
BOOTSTRAP = 1000  # resamples of images for the 95% intervals
SEED = 0
HEADLINE = ["invariance_error_mean", "sensitivity_gap_mean", "sensitivity_pos_rate"]


def variant_groups(caption):
    """The caption's paraphrases and flips, each list one release encode call."""
    return [[(text, "same") for text in caption.strings("same_caps")],
            [(text, "diff") for text in caption.strings("diff_caps")]]


def lgip_metrics(scores, bootstrap):
    """The release's metrics, pooled over pairs, with bootstrap intervals."""
    plan = scores.plan
    same = plan.pairs_of("same") & scores.pair_valid
    diff = plan.pairs_of("diff") & scores.pair_valid
    invariance = abs(scores.pair_base[same] - scores.pair_score[same])
    gaps = scores.pair_base[diff] - scores.pair_score[diff]
    bootstrap.add("invariance_error_mean", invariance, record_ids(scores, same))
    bootstrap.add("sensitivity_gap_mean", gaps, record_ids(scores, diff))
    bootstrap.add("sensitivity_pos_rate", gaps > 0, record_ids(scores, diff))
    sensitivity = gap_summary(gaps)
    return {
        "num_samples": scores.num_samples(),
        "num_invariance_pairs": int(same.sum()),
        "num_sensitivity_pairs": int(diff.sum()),
        "invariance_error_mean": mean_or_none(invariance),  # lower is better
        "sensitivity_gap_mean": sensitivity["gap_mean"],  # higher is better
        "sensitivity_pos_rate": sensitivity["pos_rate"],  # share of flips scored below the caption
        "retrieval": scores.retrieval(),  # standard R@k beside LGIP, over the same images and captions
    }


def main():
    parser = evaluation_arguments(__doc__, globals())
    parser.add_argument("--merge-only", action="store_true",
                        help="only write the _ALL file from the per-model files already there (after a "
                             "--shard-models run that was stopped)")
    args = parser.parse_args()
    outputs = check_run_outputs(args, per_model="__LGIP_{tag}.metrics.json", combined="__LGIP_ALL.metrics.json")
    with launch(args) as dist:
        if args.merge_only:
            merge_model_files(outputs, dist)
            return
        all_metrics = []
        for metrics in evaluate(args, variant_groups, lgip_metrics, "run_lgip_multi.py", outputs, dist):
            print_metrics(metrics, HEADLINE)
            retrieval = metrics["retrieval"]
            print(f"  retrieval R@1/5/10: image->text {'/'.join(f'{v:.3f}' for v in retrieval['image_to_text'].values())}, "
                  f"text->image {'/'.join(f'{v:.3f}' for v in retrieval['text_to_image'].values())}")
            write_metric_file(outputs.per_model_path(metrics["model_tag"]), metrics)
            all_metrics.append(metrics)
        all_metrics = gather_models(args, dist, all_metrics)
        if dist.is_main:
            write_metric_file(outputs.combined_path, all_metrics)


if __name__ == "__main__":
    run_cli(main)
