"""Base JSONL -> `<base>_with_perturb.jsonl`: for every caption, template paraphrases
(`same_caps`) and one-word colour/number/object flips (`diff_caps`), keyed by the
caption's index.

With the paper's rules and seed this writes the release's file byte for byte;
`--rules v2` uses rules that keep English grammatical (lgip/perturb/ has both).
"""
import os
import random

from lgip.cli import run_cli
from lgip.perturb import (PAPER_RULES, RULE_SETS, cap_count, count_flips, generator_arguments, run_generator,
                          without_caption)

_DIR = os.path.dirname(os.path.abspath(__file__))
INPUT_JSONL = os.path.join(_DIR, "lgip_coco_native5_train2017.jsonl")
OUTPUT_PATTERN = "{stem}_with_perturb.jsonl"
SEED = 42  # the release seeds Python's random with 42 once per run
RULES = "paper"  # "paper": the release's rules, byte for byte; "v2": grammatical flips and paraphrases
MAX_SAME_PER_CAP = 6
MAX_DIFF_PER_CAP = 6


def perturb_captions(captions, rng, counts, rules=PAPER_RULES):
    """`same_caps` and `diff_caps` for one record, drawing in the release's order:
    per caption the flip choices, then the paraphrase sample, then the flip sample."""
    same_caps, diff_caps = {}, {}
    for index, caption in enumerate(captions):
        flips = rules.typed_flips(caption, rng)
        paraphrases = cap_count(without_caption(rules.template_paraphrases(caption), caption), MAX_SAME_PER_CAP, rng)
        flips = cap_count(without_caption(flips, caption), MAX_DIFF_PER_CAP, rng)
        same_caps[str(index)] = [text for text, _kind in paraphrases]
        diff_caps[str(index)] = [text for text, _type in flips]
        counts["paraphrases"] += len(paraphrases)
        count_flips(counts, flips)
    return {"same_caps": same_caps, "diff_caps": diff_caps}


def main():
    args = generator_arguments(__doc__, INPUT_JSONL, OUTPUT_PATTERN, SEED, RULES).parse_args()
    rng = random.Random(args.seed)
    rules = RULE_SETS[args.rules]
    run_generator(args, lambda captions, counts: perturb_captions(captions, rng, counts, rules), OUTPUT_PATTERN)


if __name__ == "__main__":
    run_cli(main)
