"""The paper's rules, as its public release has them: the word lists and templates
(their order fixes the random draws), the template, "passive" and synonym paraphrases,
and the one-word colour/number/object flips. Given the same base file and seed, the
generators write the release's files byte for byte with these rules. Randomness comes
from a `random.Random` the caller seeds once per run; the draws match the release's
seeded global `random` call for call. Standard library only.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Tuple

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


def unique_keep_first(items: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Drop (text, label) items whose text was seen before; the first label wins."""
    seen: Dict[str, str] = {}
    for text, label in items:
        seen.setdefault(text, label)
    return list(seen.items())


# --- paraphrases (meaning-preserving) ---------------------------------------------

def template_paraphrases(caption: str) -> List[Tuple[str, str]]:
    """The release's template and prefix paraphrases of `caption` as (text, kind), kind
    `template` or `prefix`: filled with the caption as stored, stripped, shorter than
    five characters dropped, duplicates dropped keeping the first. The caption itself
    (the `{}` template) is still in the list; callers drop it as the release does."""
    filled = [(t.format(caption), "template") for t in TEMPLATES] + [(p.format(caption), "prefix") for p in PREFIXES]
    kept = [(text.strip(), kind) for text, kind in filled if len(text.strip()) >= MIN_TEXT_CHARS]
    return unique_keep_first(kept)


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
    unique = unique_keep_first([(text.strip(), kind) for text, kind in candidates])
    return [(text, kind) for text, kind in unique if len(text) >= MIN_TEXT_CHARS and text.lower() != caption.lower()]


# --- flips (meaning-changing) ------------------------------------------------------

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


def typed_flips(caption: str, rng,
                flip: Callable[[str, str, Any], Optional[str]] = flip_one_word) -> List[Tuple[str, str]]:
    """The flips of `caption` as (text, type), types tried colour, number, object, each
    made by `flip(caption, type, rng)` (the release's `flip_one_word` by default):
    stripped, unchanged or shorter than five characters dropped, duplicates dropped
    keeping the first (and its type)."""
    flips = []
    for flip_type in FLIP_WORD_LISTS:
        flipped = flip(caption, flip_type, rng)
        if flipped is not None and flipped != caption and len(flipped.strip()) >= MIN_TEXT_CHARS:
            flips.append((flipped.strip(), flip_type))
    return unique_keep_first(flips)


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
