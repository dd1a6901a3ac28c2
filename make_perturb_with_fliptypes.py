"""Base JSONL -> `<base>_with_fliptypes.jsonl`: paraphrases (`same_caps`) and flips
(`diff_caps`), with the flips also split by type (`diff_caps_color`,
`diff_caps_number`, `diff_caps_object`), keyed by the caption's index.

With the paper's rules and seed this writes the release's file byte for byte;
`--rules v2` uses rules that keep English grammatical (lgip/perturb/ has both).
"""
import os
import random

from lgip.cli import run_cli
from lgip.perturb import (FLIP_WORD_LISTS, PAPER_RULES, RULE_SETS, cap_count, count_flips, generator_arguments,
                          run_generator, split_by_type, without_caption)

_DIR = os.path.dirname(os.path.abspath(__file__))
INPUT_JSONL = os.path.join(_DIR, "lgip_coco_native5_train2017.jsonl")
OUTPUT_PATTERN = "{stem}_with_fliptypes.jsonl"
SEED = 42  # the release seeds Python's random with 42 once per run
RULES = "paper"  # "paper": the release's rules, byte for byte; "v2": grammatical flips and paraphrases
MAX_SAME_PER_CAP = 6
MAX_DIFF_PER_CAP = 6


def perturb_captions(captions, rng, counts, rules=PAPER_RULES):
    """The record's new keys, drawing in the release's order: per caption the
    paraphrase sample, then the flip choices, then the flip sample."""
    new_keys = {"same_caps": {}, "diff_caps": {}, **{f"diff_caps_{t}": {} for t in FLIP_WORD_LISTS}}
    for index, caption in enumerate(captions):
        key = str(index)
        paraphrases = cap_count(without_caption(rules.template_paraphrases(caption), caption), MAX_SAME_PER_CAP, rng)
        flips = cap_count(without_caption(rules.typed_flips(caption, rng), caption), MAX_DIFF_PER_CAP, rng)
        new_keys["same_caps"][key] = [text for text, _kind in paraphrases]
        new_keys["diff_caps"][key] = [text for text, _type in flips]
        for flip_type, texts in split_by_type(flips).items():
            new_keys[f"diff_caps_{flip_type}"][key] = texts
        counts["paraphrases"] += len(paraphrases)
        count_flips(counts, flips)
    return new_keys


def main():
    args = generator_arguments(__doc__, INPUT_JSONL, OUTPUT_PATTERN, SEED, RULES).parse_args()
    rng = random.Random(args.seed)
    rules = RULE_SETS[args.rules]
    run_generator(args, lambda captions, counts: perturb_captions(captions, rng, counts, rules), OUTPUT_PATTERN)


if __name__ == "__main__":
    run_cli(main)
