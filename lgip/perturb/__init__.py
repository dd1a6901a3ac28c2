"""Perturbation rules and the generator loop, for the data-preparation scripts. One
module per concern:

- `paper.py`: the release's word lists, templates, paraphrases and one-word flips;
- `grammar.py`: the English v2 rests on (words, noun phrases, inflection, agreement);
- `v2.py`: the v2 flips and paraphrases (`--rules v2`);
- `rules.py`: the rule sets `--rules` chooses between, and the combined edits;
- `generator.py`: the streaming loop, the flags and the summary every generator shares;
- `tagger.py`: ARO's normalisation, tokens and part-of-speech taggers;
- `compositional.py`: word-order shuffles and word-keeping swaps.

This file re-exports what the scripts use. Nothing here imports torch or numpy.
"""
from lgip.perturb.compositional import (ORDER_TYPES, SWAP_TYPES, compositional_swaps, order_shuffles,
                                        print_compositional_summary)
from lgip.perturb.generator import (count_flips, default_output_path, generate_file, generator_arguments,
                                    run_generator)
from lgip.perturb.paper import (COLORS, FLIP_WORD_LISTS, NUMBER_WORDS, OBJECTS, cap_count, split_by_type,
                                without_caption)
from lgip.perturb.rules import PAPER_RULES, RULE_SETS, combined_transformations
from lgip.perturb.tagger import ORDER_MAX_WORDS, ORDER_NORMALISATION, TAGGERS, make_tagger, normalise_caption

__all__ = [
    "COLORS", "FLIP_WORD_LISTS", "NUMBER_WORDS", "OBJECTS", "ORDER_MAX_WORDS", "ORDER_NORMALISATION", "ORDER_TYPES",
    "PAPER_RULES", "RULE_SETS", "SWAP_TYPES", "TAGGERS", "cap_count", "combined_transformations",
    "compositional_swaps", "count_flips", "default_output_path", "generate_file", "generator_arguments",
    "make_tagger", "normalise_caption", "order_shuffles", "print_compositional_summary", "run_generator",
    "split_by_type", "without_caption",
]
