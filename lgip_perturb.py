"""The perturbation rules the three LGIP generators share, and the streaming loop that
applies them to a base JSONL.

The "paper" rules reproduce the paper's public release exactly, draw for draw: given
the same base file and seed, `diff_gen_caption.py` and `make_perturb_with_fliptypes.py`
write the release's files byte for byte. Randomness always comes from a
`random.Random` the caller seeds once per run; its draws match the release's seeded
global `random` call for call.

No torch here: generating perturbations needs only the standard library.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

from lgip_common import atomic_output, check_captions, iter_jsonl, refuse_same_path

# ---------------------------------------------------------------------------
# The paper's word lists and templates (order matters: it fixes the random draws)
# ---------------------------------------------------------------------------

COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "gray", "orange", "pink", "purple"]
NUMBER_WORDS = ["one", "two", "three", "four", "five"]
OBJECTS = ["dog", "cat", "horse", "car", "bus", "train", "person", "bird", "boat", "bicycle", "truck"]

# Flip types in the order they are tried; each result is labelled with its type.
FLIP_WORD_LISTS: Dict[str, List[str]] = {"color": COLORS, "number": NUMBER_WORDS, "object": OBJECTS}

TEMPLATES = ["a photo of {}", "an image of {}", "a picture of {}", "{}", "{} in the scene", "a scene showing {}"]
PREFIXES = ["In this image, {}", "In the picture, {}", "This image shows {}"]

# The release's synonym table for the rebuttal generator, kept as it is even where an
# entry changes the meaning (person -> woman, blue -> navy): reproducing is the point.
RELEASE_SYNONYMS: Dict[str, List[str]] = {
    "cat": ["feline", "kitty"],
    "dog": ["canine", "puppy", "hound"],
    "person": ["individual", "human", "man", "woman"],
    "sits": ["rests", "perches"],
    "stands": ["stands", "poses"],
    "large": ["big", "huge", "enormous"],
    "small": ["little", "tiny", "miniature"],
    "red": ["crimson", "scarlet"],
    "blue": ["azure", "navy"],
    "green": ["emerald", "lime"],
}

# The release's "passive voice" rewrites (pattern, replacement), matched case-insensitively
# against the stripped caption. They swap subject and object, so they change the meaning;
# the README says so. Kept to reproduce the release's rebuttal set.
RELEASE_PASSIVE_PATTERNS: List[Tuple[str, str]] = [
    (r"^A (\w+) (is|are|sits|sitting|stands|standing|lies|lying) (on|in|at|by|next to|behind|in front of) (.+)\.$",
     r"A \4 \2 \3 \1."),
    (r"^(\w+) (is|are|sits|sitting|stands|standing|lies|lying) (on|in|at|by|next to|behind|in front of) (.+)\.$",
     r"\4 \2 \3 \1."),
    (r"^A (\w+) (is|are) (going|running|moving) (down|along|through) (.+)\.$",
     r"\5 \2 \3 \1 \4 them."),
]

MIN_TEXT_CHARS = 5  # shorter results are dropped, as in the release

_FLIP_PATTERNS = {flip_type: re.compile(r"\b(" + "|".join(words) + r")\b") for flip_type, words in FLIP_WORD_LISTS.items()}


def _unique_keep_first(items: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Drop (text, label) items whose text was seen before; the first label wins."""
    seen: Dict[str, str] = {}
    for text, label in items:
        seen.setdefault(text, label)
    return list(seen.items())


# ---------------------------------------------------------------------------
# Paraphrases (meaning-preserving)
# ---------------------------------------------------------------------------


def template_paraphrases(caption: str) -> List[Tuple[str, str]]:
    """The release's template and prefix paraphrases of `caption` as (text, kind), kind
    `template` or `prefix`: filled with the caption as stored, stripped, shorter than
    five characters dropped, duplicates dropped keeping the first. The caption itself
    (the `{}` template) is still in the list; callers drop it as the release does."""
    filled = [(t.format(caption), "template") for t in TEMPLATES] + [(p.format(caption), "prefix") for p in PREFIXES]
    kept = [(text.strip(), kind) for text, kind in filled if len(text.strip()) >= MIN_TEXT_CHARS]
    return _unique_keep_first(kept)


def release_passive_paraphrases(caption: str) -> List[str]:
    """The release's three "passive" rewrites that match the stripped caption, each
    capitalised with str.capitalize."""
    stripped = caption.strip()
    rewrites = []
    for pattern, replacement in RELEASE_PASSIVE_PATTERNS:
        if re.match(pattern, stripped, re.IGNORECASE):
            rewritten = re.sub(pattern, replacement, stripped, flags=re.IGNORECASE)
            if rewritten != stripped:
                rewrites.append(rewritten.capitalize())
    return rewrites


def release_synonym_paraphrases(caption: str) -> List[str]:
    """The release's synonym substitutions: the lower-cased caption split on white space,
    one word replaced, then every pair of words, joined with spaces and capitalised."""
    words = caption.lower().split()
    slots = [i for i, word in enumerate(words) if word in RELEASE_SYNONYMS]
    rewrites = []

    def emit(replacements: Dict[int, str]) -> None:
        new_words = list(words)
        for position, synonym in replacements.items():
            new_words[position] = synonym
        rewritten = " ".join(new_words).capitalize()
        if rewritten != caption:
            rewrites.append(rewritten)

    for i in slots:
        for synonym in RELEASE_SYNONYMS[words[i]]:
            emit({i: synonym})
    for a, i in enumerate(slots):
        for j in slots[a + 1:]:
            for synonym_i in RELEASE_SYNONYMS[words[i]]:
                for synonym_j in RELEASE_SYNONYMS[words[j]]:
                    emit({i: synonym_i, j: synonym_j})
    return rewrites


def enhanced_paraphrases(caption: str) -> List[Tuple[str, str]]:
    """The rebuttal generator's paraphrases as (text, kind), kind one of `template`,
    `prefix`, `passive`, `synonym`, in first-seen order (the release used a set, whose
    order changes from run to run). Stripped; shorter than five characters dropped; equal
    to the caption ignoring case dropped, as the release compares them."""
    candidates = [(t.format(caption), "template") for t in TEMPLATES]
    candidates += [(p.format(caption), "prefix") for p in PREFIXES]
    candidates += [(text, "passive") for text in release_passive_paraphrases(caption)]
    candidates += [(text, "synonym") for text in release_synonym_paraphrases(caption)]
    unique = _unique_keep_first([(text.strip(), kind) for text, kind in candidates])
    return [(text, kind) for text, kind in unique if len(text) >= MIN_TEXT_CHARS and text.lower() != caption.lower()]


# ---------------------------------------------------------------------------
# Flips (meaning-changing)
# ---------------------------------------------------------------------------


def flip_one_word(caption: str, flip_type: str, rng) -> Optional[str]:
    """Replace the leftmost whole-word, case-sensitive occurrence of any word of the
    type's list by `rng.choice` over the rest of the list (list order kept). None when no
    word of the list occurs; no draw is made then."""
    pattern = _FLIP_PATTERNS[flip_type]
    match = pattern.search(caption)
    if match is None:
        return None
    others = [word for word in FLIP_WORD_LISTS[flip_type] if word != match.group(1)]
    replacement = rng.choice(others)
    return caption[: match.start()] + replacement + caption[match.end():]


def typed_flips(caption: str, rng) -> List[Tuple[str, str]]:
    """The release's flips of `caption` as (text, type), types tried colour, number,
    object: stripped, unchanged or shorter than five characters dropped, duplicates
    dropped keeping the first (and its type)."""
    flips = []
    for flip_type in FLIP_WORD_LISTS:
        flipped = flip_one_word(caption, flip_type, rng)
        if flipped is not None and flipped != caption and len(flipped.strip()) >= MIN_TEXT_CHARS:
            flips.append((flipped.strip(), flip_type))
    return _unique_keep_first(flips)


def without_caption(items: List[Tuple[str, str]], caption: str) -> List[Tuple[str, str]]:
    """Drop items whose text equals the stripped caption (the release's last filter)."""
    stripped = caption.strip()
    return [(text, label) for text, label in items if text.strip() != stripped]


def split_by_type(flips: List[Tuple[str, str]]) -> Dict[str, List[str]]:
    """{type: [texts]} for every flip type, in flip order."""
    return {flip_type: [text for text, t in flips if t == flip_type] for flip_type in FLIP_WORD_LISTS}


def cap_count(items: list, limit: int, rng) -> list:
    """At most `limit` items: `rng.sample(items, limit)` when there are more, as the
    release does (so the draw happens only then)."""
    return rng.sample(items, limit) if len(items) > limit else items


def combined_transformations(caption: str, rng, max_paraphrases: int = 5, max_items: int = 6) -> List[Dict[str, str]]:
    """The rebuttal generator's paraphrase-then-flip edits: every flip of each of the
    first `max_paraphrases` enhanced paraphrases, as {"text", "combined_type":
    "para+<type>", "intermediate_para"}; the first `max_items` are kept."""
    combined = []
    for paraphrase, _kind in enhanced_paraphrases(caption)[:max_paraphrases]:
        for text, flip_type in typed_flips(paraphrase, rng):
            combined.append({"text": text, "combined_type": f"para+{flip_type}", "intermediate_para": paraphrase})
    return combined[:max_items]


# ---------------------------------------------------------------------------
# The streaming loop every generator runs
# ---------------------------------------------------------------------------


def default_output_path(input_path: str, pattern: str) -> str:
    """Output beside the input, named by `pattern` with `{stem}` the input's file name
    without `.jsonl` (the release's names: `{stem}_with_perturb.jsonl`, ...)."""
    folder, name = os.path.split(input_path)
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else os.path.splitext(name)[0]
    return os.path.join(folder, pattern.format(stem=stem))


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
    refuse_same_path(input_path, output_path)
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


def print_summary(counts: Counter, output_path: str, seconds: float) -> None:
    """The summary every generator ends with."""
    flip_types = sorted(key[len("flips_"):] for key in counts if key.startswith("flips_"))
    flips_total = sum(counts[f"flips_{t}"] for t in flip_types)
    print(f"records:               {counts['records']}")
    print(f"captions:              {counts['captions']}")
    print(f"paraphrases:           {counts['paraphrases']}")
    per_type = ", ".join(f"{t} {counts['flips_' + t]}" for t in flip_types) or "none"
    print(f"flips:                 {flips_total} ({per_type})")
    print(f"captions with no flip: {counts['captions_without_flip']}")
    if "combined" in counts:
        print(f"combined edits:        {counts['combined']}")
    print(f"wrote {output_path} in {seconds:.1f} s")


def positive_int(text: str) -> int:
    """argparse type for --limit and the like."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def generator_arguments(description: str, default_input: str, output_pattern: str, seed: int) -> argparse.ArgumentParser:
    """The flags every generator takes; each default is the script's UPPERCASE constant."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=default_input, help=f"base JSONL with 'orig_captions' (default: {default_input})")
    parser.add_argument("--output", default=None,
                        help=f"output JSONL (default: {output_pattern.format(stem='<input stem>')} beside the input)")
    parser.add_argument("--seed", type=int, default=seed, help=f"seed of the random draws (default: {seed}, the release's)")
    parser.add_argument("--limit", type=positive_int, default=None, help="process only the first N records")
    return parser


def run_generator(args, perturb_captions, output_pattern: str) -> None:
    """Resolve the output path, run `generate_file`, print the summary."""
    output_path = args.output or default_output_path(args.input, output_pattern)
    started = time.perf_counter()
    counts = generate_file(args.input, output_path, perturb_captions, limit=args.limit)
    print_summary(counts, output_path, time.perf_counter() - started)
