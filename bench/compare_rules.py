"""The paper's rules and the v2 rules side by side on one base JSONL: how many captions
get a flip of each type, how many paraphrases a caption gets, and example captions with
both rule sets' outputs. Prints Markdown (the figures in the README come from here).

Each rule set runs the generators' own code (make_perturb_with_fliptypes.perturb_captions
and rebuttal_enhanced_perturb_with_fliptypes.perturb_captions, seeded as the scripts
are), in memory; nothing is written.

    python bench/compare_rules.py                       # tests/data/base_sample.jsonl
    python bench/compare_rules.py --input lgip_coco_native5_train2017.jsonl --examples 20
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import make_perturb_with_fliptypes  # noqa: E402  (after the path is set)
import rebuttal_enhanced_perturb_with_fliptypes  # noqa: E402
from lgip.cli import nonnegative_int  # noqa: E402
from lgip.io import check_captions, iter_jsonl  # noqa: E402
from lgip.perturb import FLIP_WORD_LISTS, RULE_SETS  # noqa: E402

INPUT_JSONL = os.path.join(REPO, "tests", "data", "base_sample.jsonl")
SEED = 42  # the generators' seed
EXAMPLES = 10
EXAMPLE_SEED = 0  # which captions are shown


def perturbed_records(path: str, generator, rules_name: str) -> list:
    """(captions, new keys) per record, as the generator module writes them with these rules."""
    rng = random.Random(SEED)
    counts: Counter = Counter()
    return [(captions, generator.perturb_captions(captions, rng, counts, RULE_SETS[rules_name]))
            for captions in (check_captions(record, path, line_no) for line_no, record in iter_jsonl(path))]


def figures(path: str, rules_name: str) -> dict:
    """The summary figures of one rule set on one base file."""
    fliptypes = perturbed_records(path, make_perturb_with_fliptypes, rules_name)
    rebuttal = perturbed_records(path, rebuttal_enhanced_perturb_with_fliptypes, rules_name)
    captions = sum(len(captions) for captions, _ in fliptypes)
    result = {"captions": captions}
    for flip_type in FLIP_WORD_LISTS:
        typed_key = f"diff_caps_{flip_type}"
        result[flip_type] = sum(1 for _, keys in fliptypes for flips in keys[typed_key].values() if flips)
    result["no flip"] = sum(1 for _, keys in fliptypes for texts in keys["diff_caps"].values() if not texts)
    result["template paraphrases"] = sum(len(t) for _, keys in fliptypes for t in keys["same_caps"].values()) / captions
    kinds = Counter(kind for _, keys in rebuttal for ks in keys["same_caps_kind"].values() for kind in ks)
    result["rebuttal paraphrases"] = sum(kinds.values()) / captions
    for kind in ["passive", "synonym"]:
        result[f"{kind} paraphrases"] = kinds[kind] / captions
        result[f"captions with a {kind}"] = sum(1 for _, keys in rebuttal for ks in keys["same_caps_kind"].values()
                                                if kind in ks)
    result["records"] = {"fliptypes": fliptypes, "rebuttal": rebuttal}
    return result


def cell(texts: list) -> str:
    """Texts for one Markdown table cell (a line break inside a text shown as `\\n`)."""
    return "<br>".join(text.replace("|", "\\|").replace("\n", "\\n") for text in texts) or "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=INPUT_JSONL, help="base JSONL (default: the test sample)")
    parser.add_argument("--examples", type=nonnegative_int, default=EXAMPLES, help=f"example captions shown (default {EXAMPLES})")
    args = parser.parse_args()
    paper, v2 = figures(args.input, "paper"), figures(args.input, "v2")
    total = paper["captions"]

    print(f"{total} captions of {os.path.relpath(args.input, REPO)}, seed {SEED}.\n")
    print("| | paper | v2 |\n|---|---:|---:|")
    for flip_type in FLIP_WORD_LISTS:
        article = "an" if flip_type[0] in "aeiou" else "a"
        print(f"| captions with {article} {flip_type} flip | {paper[flip_type]} ({paper[flip_type] / total:.0%}) "
              f"| {v2[flip_type]} ({v2[flip_type] / total:.0%}) |")
    print(f"| captions with no flip | {paper['no flip']} | {v2['no flip']} |")
    for key in ["template paraphrases", "rebuttal paraphrases", "passive paraphrases", "synonym paraphrases"]:
        print(f"| {key} per caption | {paper[key]:.2f} | {v2[key]:.2f} |")
    for kind in ["passive", "synonym"]:
        print(f"| captions with a {kind} paraphrase | {paper[f'captions with a {kind}']} "
              f"| {v2[f'captions with a {kind}']} |")

    all_captions = [(record, index) for record, (captions, _) in enumerate(paper["records"]["fliptypes"])
                    for index in range(len(captions))]
    chosen = sorted(random.Random(EXAMPLE_SEED).sample(all_captions, min(args.examples, len(all_captions))))
    print("\n| caption | paper flips | v2 flips |\n|---|---|---|")
    for record, index in chosen:
        caption = paper["records"]["fliptypes"][record][0][index]
        flips = [cell(rules["records"]["fliptypes"][record][1]["diff_caps"][str(index)]) for rules in (paper, v2)]
        print(f"| {cell([caption.strip()])} | {flips[0]} | {flips[1]} |")
    print("\n| caption | paper rebuttal paraphrases (kind) | v2 rebuttal paraphrases (kind) |\n|---|---|---|")
    for record, index in chosen:
        caption = paper["records"]["rebuttal"][record][0][index]
        paraphrases = []
        for rules in (paper, v2):
            keys = rules["records"]["rebuttal"][record][1]
            paraphrases.append(cell([f"{text} ({kind})" for text, kind in zip(keys["same_caps"][str(index)],
                                                                             keys["same_caps_kind"][str(index)])]))
        print(f"| {cell([caption.strip()])} | {paraphrases[0]} | {paraphrases[1]} |")


if __name__ == "__main__":
    main()
