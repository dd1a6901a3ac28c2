"""The streaming loop every generator runs: read a base JSONL record by record, add
the keys the script's `perturb_captions` makes, write the result atomically; plus the
flags every generator takes, the default output name and the summary it prints.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

from lgip.cli import limit_marker, nonnegative_int, positive_int
from lgip.io import atomic_output, check_captions, check_output_path, iter_jsonl
from lgip.perturb.rules import RULE_SETS


def default_output_path(input_path: str, pattern: str, limit: Optional[int] = None) -> str:
    """Output beside the input, named by `pattern` with `{stem}` the input's file name
    without `.jsonl` (the release's names: `{stem}_with_perturb.jsonl`, ...); a `--limit
    N` run's name ends in `__limitN.jsonl`, so it never replaces the full file."""
    folder, name = os.path.split(input_path)
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else os.path.splitext(name)[0]
    output = pattern.format(stem=stem)
    return os.path.join(folder, output[: -len(".jsonl")] + limit_marker(limit) + ".jsonl")


def generate_file(
    input_path: str,
    output_path: str,
    perturb_captions: Callable[[List[str], Counter], Dict[str, Any]],
    limit: Optional[int] = None,
) -> Counter:
    """Stream `input_path` record by record, add the keys `perturb_captions(captions,
    counts)` returns (in its order), and write the result atomically to `output_path`,
    one `json.dumps(record, ensure_ascii=False)` per line. Stops after `limit` records
    when given. Returns the counts (records, captions, and what `perturb_captions`
    counted). Bad input raises InputError and leaves no output file."""
    check_output_path(output_path, [input_path], "--output")
    counts: Counter = Counter()
    with atomic_output(output_path) as out:
        for line_no, record in iter_jsonl(input_path):
            if limit is not None and counts["records"] >= limit:
                break
            captions = check_captions(record, input_path, line_no)
            record.update(perturb_captions(captions, counts))
            counts["records"] += 1
            counts["captions"] += len(captions)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return counts


def count_flips(counts: Counter, flips: List[Tuple[str, str]]) -> None:
    """Add one caption's kept flips to the summary counts."""
    for _text, flip_type in flips:
        counts[f"flips_{flip_type}"] += 1
    if not flips:
        counts["captions_without_flip"] += 1


def print_summary(counts: Counter, output_path: str, seconds: float, rules: str = "paper") -> None:
    """The summary every generator ends with."""
    flip_types = sorted(key[len("flips_"):] for key in counts if key.startswith("flips_"))
    flips_total = sum(counts[f"flips_{t}"] for t in flip_types)
    print(f"rules:                 {rules}")
    print(f"records:               {counts['records']}")
    print(f"captions:              {counts['captions']}")
    print(f"paraphrases:           {counts['paraphrases']}")
    per_type = ", ".join(f"{t} {counts['flips_' + t]}" for t in flip_types) or "none"
    print(f"flips:                 {flips_total} ({per_type})")
    print(f"captions with no flip: {counts['captions_without_flip']}")
    if "combined" in counts:
        print(f"combined edits:        {counts['combined']}")
    print(f"wrote {output_path} in {seconds:.1f} s")


def generator_arguments(description: str, default_input: str, output_pattern: str, seed: int,
                        rules: Optional[str] = "paper",
                        input_help: str = "base JSONL with 'orig_captions'") -> argparse.ArgumentParser:
    """The flags every generator takes; each default is the script's UPPERCASE constant.
    `rules=None` leaves out --rules, for a generator that has no paper/v2 choice;
    `input_help` says what its input is."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=default_input, help=f"{input_help} (default: {default_input})")
    variants = "with --rules v2 ending in _v2.jsonl, " if rules is not None else ""
    parser.add_argument("--output", default=None,
                        help=f"output JSONL (default: {output_pattern.format(stem='<input stem>')} beside the input; "
                             f"{variants}with --limit N ending in __limitN.jsonl)")
    parser.add_argument("--seed", type=nonnegative_int, default=seed,
                        help=f"seed of the random draws (default: {seed}, the release's)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="process only the first N records (the default output name then says so)")
    if rules is not None:
        parser.add_argument("--rules", choices=list(RULE_SETS), default=rules,
                            help=f"perturbation rules: 'paper' reproduces the release byte for byte; 'v2' keeps English "
                                 f"grammatical and meanings right, and marks each record \"rules\": \"v2\" "
                                 f"(default: {rules})")
    return parser


def run_generator(args, perturb_captions, output_pattern: str) -> None:
    """Resolve the output path (the rule set's suffix on the default name), run
    `generate_file` (adding `"rules"` to each record when the rule set labels records: v2
    only), print the summary."""
    rules = RULE_SETS[args.rules]
    default_pattern = output_pattern.replace(".jsonl", rules.output_suffix + ".jsonl")
    output_path = args.output or default_output_path(args.input, default_pattern, args.limit)

    def perturb_and_label(captions: List[str], counts: Counter) -> Dict[str, Any]:
        new_keys = perturb_captions(captions, counts)
        if rules.labels_records:
            new_keys["rules"] = rules.name
        return new_keys

    started = time.perf_counter()
    counts = generate_file(args.input, output_path, perturb_and_label, limit=args.limit)
    print_summary(counts, output_path, time.perf_counter() - started, rules.name)
