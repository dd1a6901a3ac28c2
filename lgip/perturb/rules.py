"""The two rule sets `--rules` chooses between, paper (the default) and v2, as one
shape the generators call, and the rebuttal generator's paraphrase-then-flip edits,
made with either.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from lgip.perturb.paper import enhanced_paraphrases, template_paraphrases, typed_flips
from lgip.perturb.v2 import enhanced_paraphrases_v2, flip_v2, template_paraphrases_v2


class RuleSet(NamedTuple):
    """The rules a generator draws its perturbations from."""
    name: str
    template_paraphrases: Callable[[str], List[Tuple[str, str]]]
    enhanced_paraphrases: Callable[[str], List[Tuple[str, str]]]
    typed_flips: Callable[[str, Any], List[Tuple[str, str]]]
    labels_records: bool  # v2 records say "rules": "v2"; paper records stay the release's, byte for byte
    output_suffix: str  # added to the default output's name, so both rule sets' files (and metrics) sit side by side


PAPER_RULES = RuleSet("paper", template_paraphrases, enhanced_paraphrases, typed_flips, labels_records=False,
                      output_suffix="")
V2_RULES = RuleSet("v2", template_paraphrases_v2, enhanced_paraphrases_v2, functools.partial(typed_flips, flip=flip_v2),
                   labels_records=True, output_suffix="_v2")
RULE_SETS = {rules.name: rules for rules in (PAPER_RULES, V2_RULES)}


def combined_transformations(caption: str, rng, max_paraphrases: int = 5, max_items: int = 6,
                             rules: Optional[RuleSet] = None) -> List[Dict[str, str]]:
    """The rebuttal generator's paraphrase-then-flip edits: every flip of each of the
    first `max_paraphrases` enhanced paraphrases, as {"text", "combined_type":
    "para+<type>", "intermediate_para"}; the first `max_items` are kept. `rules` (a
    RuleSet, the paper's by default) makes the paraphrases and flips."""
    rules = rules or PAPER_RULES
    combined = []
    for paraphrase, _kind in rules.enhanced_paraphrases(caption)[:max_paraphrases]:
        for text, flip_type in rules.typed_flips(paraphrase, rng):
            combined.append({"text": text, "combined_type": f"para+{flip_type}", "intermediate_para": paraphrase})
    return combined[:max_items]
