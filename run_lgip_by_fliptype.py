"""Perturbed JSONL with flip types x models -> LGIP metrics per flip type:
`<input stem>__LGIP_fliptypes.metrics.json`, a list with one entry per model holding
`invariance_error_mean`, `global_sensitivity` and `by_flip_type` (read from every
`diff_caps_<type>` key, so new flip types need no code), each with 95% bootstrap
intervals, run facts and a config block.

Shares the embedding cache with the other scripts: after `run_lgip_multi.py` on the
same file and models, nothing new is encoded.

On several GPUs or machines, run it under torchrun (or srun); no other change:

    torchrun --standalone --nproc-per-node 8 run_lgip_by_fliptype.py      # ranks share each model
    torchrun --standalone --nproc-per-node 8 run_lgip_by_fliptype.py --shard-models  # whole models per rank
"""
import os

from lgip.engine import record_ids
from lgip.engine.plan import TYPED_FLIP_PREFIX
from lgip.stats import gap_summary, mean_or_none
from lgip_common import (PAPER_MODELS, check_run_outputs, default_workers, evaluate, evaluation_arguments,
                         gather_models, launch, print_metrics, run_cli, write_metric_file)

_DIR = os.path.dirname(os.path.abspath(__file__))
JSONL_PATH = os.path.join(_DIR, "lgip_coco_native5_train2017_with_fliptypes.jsonl")
MODELS = list(PAPER_MODELS)
DEVICE = "auto"
PRECISION = "fp32"
BATCH_SIZE = 32
TEXT_BATCH_SIZE = 256
WORKERS = default_workers()
BOOTSTRAP = 1000
SEED = 0
RELEASE_FLIP_TYPES = ["color", "number", "object"]  # always reported, as the release does, even when empty


def variant_groups(caption):
    """Paraphrases, all flips, and each typed flip list: one release encode call each."""
    groups = [[(text, "same") for text in caption.strings("same_caps")],
              [(text, "diff") for text in caption.strings("diff_caps")]]
    for flip_type in caption.flip_types():
        groups.append([(text, f"type:{flip_type}") for text in caption.strings(TYPED_FLIP_PREFIX + flip_type)])
    return groups


def fliptype_metrics(scores, bootstrap):
    """Invariance error, global sensitivity and sensitivity per flip type."""
    plan = scores.plan
    same = plan.pairs_of("same") & scores.pair_valid
    invariance = abs(scores.pair_base[same] - scores.pair_score[same])
    bootstrap.add("invariance_error_mean", invariance, record_ids(scores, same))
    sections = {"global_sensitivity": plan.pairs_of("diff") & scores.pair_valid}
    flip_types = RELEASE_FLIP_TYPES + sorted(set(plan.labels_of("type")) - set(RELEASE_FLIP_TYPES))
    sections.update({f"by_flip_type.{t}": plan.pairs_of(f"type:{t}") & scores.pair_valid for t in flip_types})
    summaries = {}
    for name, mask in sections.items():
        gaps = scores.pair_base[mask] - scores.pair_score[mask]
        summaries[name] = gap_summary(gaps)
        bootstrap.add(f"{name}.gap_mean", gaps, record_ids(scores, mask))
        bootstrap.add(f"{name}.pos_rate", gaps > 0, record_ids(scores, mask))
    by_type = {name.split(".", 1)[1]: summary for name, summary in summaries.items() if name.startswith("by_flip_type.")}
    return {
        "num_samples": scores.num_samples(),
        "invariance_error_mean": mean_or_none(invariance),
        "global_sensitivity": summaries["global_sensitivity"],
        "by_flip_type": by_type,
    }


def main():
    parser = evaluation_arguments(__doc__, globals())
    args = parser.parse_args()
    outputs = check_run_outputs(args, combined="__LGIP_fliptypes.metrics.json")
    with launch(args) as dist:
        all_metrics = []
        for metrics in evaluate(args, variant_groups, fliptype_metrics, "run_lgip_by_fliptype.py", outputs, dist):
            print_metrics(metrics, ["invariance_error_mean"])
            for name, summary in [("global", metrics["global_sensitivity"]), *metrics["by_flip_type"].items()]:
                print(f"  {name:>8}: gap_mean={summary['gap_mean']}, pos_rate={summary['pos_rate']}, count={summary['count']}")
            all_metrics.append(metrics)
        all_metrics = gather_models(args, dist, all_metrics)
        if dist.is_main:
            write_metric_file(outputs.combined_path, all_metrics)


if __name__ == "__main__":
    run_cli(main)
