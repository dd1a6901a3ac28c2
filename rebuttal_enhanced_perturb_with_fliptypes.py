"""Base JSONL -> `rebuttal_enhanced_<base>_with_fliptypes.jsonl`: the release's
rebuttal set. Paraphrases also by the release's synonym table and "passive" rewrites
(`same_caps`, with their kind in `same_caps_kind`), typed flips, and `combined_caps`:
flips of the first five paraphrases.

Unlike the release, whose paraphrase order went through a Python set and so changed
from run to run, the output is identical on every run (first-seen order: templates,
prefixes, passive, synonyms). The release's "passive" rewrites swap subject and
object and change the meaning; they are kept here to reproduce the release. `--rules
v2` makes true passives and meaning-keeping synonyms only (lgip/perturb/v2.py).
"""
import os
import random

from lgip.cli import run_cli
from lgip.perturb import (FLIP_WORD_LISTS, PAPER_RULES, RULE_SETS, cap_count, combined_transformations, count_flips,
                          generator_arguments, run_generator, split_by_type, without_caption)

_DIR = os.path.dirname(os.path.abspath(__file__))
INPUT_JSONL = os.path.join(_DIR, "lgip_coco_native5_train2017.jsonl")
OUTPUT_PATTERN = "rebuttal_enhanced_{stem}_with_fliptypes.jsonl"
SEED = 42  # the release seeds Python's random with 42 once per run
RULES = "paper"  # "paper": the release's rules, byte for byte; "v2": grammatical flips and paraphrases
MAX_SAME_PER_CAP = 6
MAX_DIFF_PER_CAP = 6
MAX_COMBINED_PER_CAP = 6
COMBINED_FROM_PARAPHRASES = 5  # the release flips the first five paraphrases


def perturb_captions(captions, rng, counts, rules=PAPER_RULES):
    """The record's new keys, drawing in the release's order: per caption the
    paraphrase sample, the flip choices, the flip sample, then the combined edits'
    flip choices."""
    new_keys = {"same_caps": {}, "diff_caps": {}, **{f"diff_caps_{t}": {} for t in FLIP_WORD_LISTS},
                "combined_caps": {}, "same_caps_kind": {}}
    for index, caption in enumerate(captions):
        key = str(index)
        paraphrases = cap_count(without_caption(rules.enhanced_paraphrases(caption), caption), MAX_SAME_PER_CAP, rng)
        flips = cap_count(without_caption(rules.typed_flips(caption, rng), caption), MAX_DIFF_PER_CAP, rng)
        combined = combined_transformations(caption, rng, COMBINED_FROM_PARAPHRASES, MAX_COMBINED_PER_CAP, rules)
        new_keys["same_caps"][key] = [text for text, _kind in paraphrases]
        new_keys["diff_caps"][key] = [text for text, _type in flips]
        for flip_type, texts in split_by_type(flips).items():
            new_keys[f"diff_caps_{flip_type}"][key] = texts
        new_keys["combined_caps"][key] = combined
        new_keys["same_caps_kind"][key] = [kind for _text, kind in paraphrases]
        counts["paraphrases"] += len(paraphrases)
        counts["combined"] += len(combined)
        count_flips(counts, flips)
    return new_keys


def main():
    args = generator_arguments(__doc__, INPUT_JSONL, OUTPUT_PATTERN, SEED, RULES).parse_args()
    rng = random.Random(args.seed)
    rules = RULE_SETS[args.rules]
    run_generator(args, lambda captions, counts: perturb_captions(captions, rng, counts, rules), OUTPUT_PATTERN)


if __name__ == "__main__":
    run_cli(main)
