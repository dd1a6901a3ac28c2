"""Perturbed (or base) JSONL -> `<input stem>_with_compositional.jsonl`: the probes in
which every word stays and only order or binding changes, keyed by the caption's index.

- `order_caps`: ARO's four COCO-Order shuffles of each caption, {"text", "order_type"}:
  shuffle_nouns_adjs, shuffle_allbut_nouns_adjs, shuffle_within_trigrams,
  shuffle_trigrams. A shuffle equal to the original is drawn again, then dropped.
  As in ARO, every text the order probe scores is normalised the same way; the
  normalised original is `order_orig`, the normalisation `compositional_normalisation`.
- `swap_caps`: swaps that keep every word and change the meaning, {"text",
  "swap_type"}: `attribute` (a black cat and a white dog -> a white cat and a black
  dog) and `relation` (a man riding a horse -> a horse riding a man), only where the
  pattern is unambiguous.

Run it on a perturbed file (by default the rebuttal generator's) and the keys are added
beside `same_caps` and `diff_caps`, so `run_compositional.py` can also score
hard-positive triples (caption, paraphrase, hard negative). Part-of-speech tags come
from `--tagger lexicon` (offline: lemminflect's lexicon and context rules) or
`--tagger spacy` (spaCy's en_core_web_sm, ARO's choice, when installed). The rules live
in lgip/perturb/compositional.py and tagger.py.
"""
import os
import random
import time

from lgip.cli import positive_int, run_cli
from lgip.io import check_output_path, iter_jsonl
from lgip.perturb import (ORDER_MAX_WORDS, ORDER_NORMALISATION, TAGGERS, compositional_swaps, default_output_path,
                          generate_file, generator_arguments, make_tagger, normalise_caption, order_shuffles,
                          print_compositional_summary)

_DIR = os.path.dirname(os.path.abspath(__file__))
INPUT_JSONL = os.path.join(_DIR, "rebuttal_enhanced_lgip_coco_native5_train2017_with_fliptypes.jsonl")
OUTPUT_PATTERN = "{stem}_with_compositional.jsonl"
SEED = 42
TAGGER = "lexicon"  # or "spacy" (needs spaCy and en_core_web_sm)
ORDER_REDRAWS = 10  # draws of a shuffle before one equal to the original is dropped
MAX_WORDS = ORDER_MAX_WORDS  # ARO's COCO-Order keeps the first 30 words


def perturb_captions(captions, tagger, rng, counts, redraws=ORDER_REDRAWS, max_words=MAX_WORDS, tagger_name=TAGGER):
    """The record's new keys: per caption the normalised original and its shuffles
    (drawing in ORDER_TYPES order), then the swaps (no draws)."""
    new_keys = {"order_orig": {}, "order_caps": {}, "swap_caps": {},
                "compositional_normalisation": ORDER_NORMALISATION, "compositional_tagger": tagger_name}
    for index, caption in enumerate(captions):
        key = str(index)
        all_tokens = normalise_caption(caption, max_words=None).split()
        counts["order_truncated"] += len(all_tokens) > max_words
        tokens = all_tokens[:max_words]
        normalised = " ".join(tokens)
        shuffles, dropped = order_shuffles(tokens, tagger(tokens), rng, redraws)
        swaps = compositional_swaps(caption, tagger)
        new_keys["order_orig"][key] = normalised
        new_keys["order_caps"][key] = shuffles
        new_keys["swap_caps"][key] = swaps
        for shuffle in shuffles:
            counts[f"order_{shuffle['order_type']}"] += 1
        for order_type in dropped:
            counts[f"order_dropped_{order_type}"] += 1
        for swap in swaps:
            counts[f"captions_with_{swap['swap_type']}_swap"] += 1
        counts["captions_with_swap"] += bool(swaps)
    return new_keys


def parse_args():
    parser = generator_arguments(__doc__, INPUT_JSONL, OUTPUT_PATTERN, SEED, rules=None,
                                 input_help="perturbed JSONL (same_caps/diff_caps, for triples) or base JSONL")
    parser.add_argument("--tagger", choices=TAGGERS, default=TAGGER,
                        help="part-of-speech tagger: lexicon (offline, lemminflect) or spacy (en_core_web_sm, as ARO; "
                             "needs spaCy and the model) (default: %(default)s)")
    parser.add_argument("--redraws", type=positive_int, default=ORDER_REDRAWS,
                        help="draws of a shuffle before one equal to the original is dropped (default: %(default)s)")
    parser.add_argument("--max-words", type=positive_int, default=MAX_WORDS,
                        help="normalised captions keep this many tokens, as ARO (default: %(default)s)")
    return parser.parse_args()


def main():
    args = parse_args()
    tagger = make_tagger(args.tagger)  # a missing spaCy fails here, before any output
    output_path = args.output or default_output_path(args.input, OUTPUT_PATTERN, args.limit)
    check_output_path(output_path, [args.input], "--output")  # before the input is read
    _line, first = next(iter_jsonl(args.input))
    if "same_caps" not in first:
        print(f"note: {args.input} has no 'same_caps': order and swap probes only; for hard-positive triples run "
              f"this on a perturbed file (e.g. the rebuttal generator's output)")
    rng = random.Random(args.seed)
    started = time.perf_counter()
    counts = generate_file(args.input, output_path,
                           lambda captions, counts: perturb_captions(captions, tagger, rng, counts, args.redraws,
                                                                     args.max_words, args.tagger), limit=args.limit)
    print_compositional_summary(counts, output_path, time.perf_counter() - started)


if __name__ == "__main__":
    run_cli(main)
