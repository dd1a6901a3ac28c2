"""The perturbation rules the three LGIP generators share, and the streaming loop that
applies them to a base JSONL.

The "paper" rules (the default) reproduce the paper's public release exactly, draw for
draw: given the same base file and seed, `diff_gen_caption.py` and
`make_perturb_with_fliptypes.py` write the release's files byte for byte. The "v2" rules
(`--rules v2`) fix what the release's rules break in English: see the "Rules v2" section.
Randomness always comes from a `random.Random` the caller seeds once per run; the paper
rules' draws match the release's seeded global `random` call for call.

No torch here: the paper rules need only the standard library; v2 also uses inflect and
lemminflect, imported on first use.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import time
from collections import Counter
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from lgip.io import atomic_output, check_captions, iter_jsonl, refuse_same_path

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


def combined_transformations(caption: str, rng, max_paraphrases: int = 5, max_items: int = 6,
                             rules: Optional["RuleSet"] = None) -> List[Dict[str, str]]:
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


# ===========================================================================
# Rules v2 (--rules v2): a rule set a linguist would sign
# ===========================================================================
#
# The paper's rules above stay the default and reproduce the release. v2 matches whole
# words case-insensitively and writes each replacement in the capitalisation of the word
# it replaces; flips keep the caption grammatical (number, a/an, is/are) and never flip
# into something the caption already mentions; paraphrases keep the sentence well formed
# and its meaning. A flip is a site finder, which returns the options in table order,
# and a rewrite, which takes the chosen option: the one random draw,
# `rng.choice(site.options)`, is separable, and the rest can be checked by hand.
#
# inflect writes noun forms (plural, singular) and a/an; lemminflect's dictionary says
# what a word can be (noun, adjective, verb) and writes verb forms (participles). Both
# are imported on first use: the paper rules never need them, and inflect takes seconds.

# The 80 COCO object categories as COCO spells them, in COCO's order (it fixes the draws).
COCO_CATEGORIES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]
# COCO names that are plural nouns, with their singular (None: no countable singular).
PLURAL_CATEGORY_NAMES: Dict[str, Optional[str]] = {"skis": "ski", "scissors": None}
# Mass nouns among the categories: no "a ..." and no plural.
MASS_CATEGORY_NAMES = ["broccoli"]
# Other spellings of a category's noun, recognised in captions; replacements use COCO's.
OBJECT_SPELLINGS = {"aeroplane": "airplane", "cellphone": "cell phone", "doughnut": "donut",
                    "hair dryer": "hair drier", "remote control": "remote"}
# Words always written this way, whose capitals say nothing about the caption's case.
ACRONYMS = {"tv": "TV", "tvs": "TVs"}

# The release's eleven colours and common others; a spelling variant is the same colour.
COLORS_V2 = COLORS + ["tan", "silver", "gold", "beige"]
COLOR_SPELLINGS = {"grey": "gray"}

# Numbers: these words and the digits 1-10; "a"/"an" before a known object count as one.
NUMBER_WORDS_V2 = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
INDEFINITE_ARTICLES = ["a", "an"]
# Words after a counted noun that refer back to its number (`two dogs playing together`,
# `a man holding his phone`): a number flip there keeps the noun's number (two -> three).
NUMBER_BOUND_WORDS = ["its", "his", "her", "their", "itself", "himself", "herself", "themselves", "each other",
                      "one another", "together", "both"]
# Words before a noun that make it singular (for `sheep`, whose two numbers look alike).
SINGULAR_DETERMINERS = ["a", "an", "one", "1", "this", "that", "each", "every", "another"]
# Forms of be and have, singular -> plural. These and any other present-tense verb right
# after a noun phrase (`sits` <-> `sit`), or between `there` and it, agree with it.
AGREEING_VERBS = {"is": "are", "was": "were", "has": "have"}
# Words after which `is`, `has`, ... belong to a relative clause, not to the caption's sentence.
RELATIVE_PRONOUNS = ["that", "which", "who", "where"]
# Pronouns that can be a caption's subject (`someone stands next to a dog`).
SUBJECT_PRONOUNS = ["i", "you", "he", "she", "it", "we", "they", "someone", "somebody", "something", "everyone",
                    "everybody", "nobody"]

# Closed-class words: never a modifier or the head of a noun phrase, so they end one.
FUNCTION_WORDS = [
    "a", "an", "the", "this", "that", "these", "those", "each", "every", "some", "any", "no", "another", "other",
    "both", "all", "many", "much", "several", "few", "more", "most", "such", "what", "which", "whose", "who",
    "whom", "his", "her", "its", "their", "our", "my", "your", "i", "you", "he", "she", "it", "we", "they", "me",
    "him", "us", "them", "someone", "something", "about", "above", "across", "after", "against", "along",
    "alongside", "amid", "among", "around", "as", "at", "atop", "before", "behind", "below", "beneath", "beside",
    "besides", "between", "beyond", "by", "down", "during", "for", "from", "in", "inside", "into", "near",
    "next", "of", "off", "on", "onto", "out", "outside", "over", "past", "through", "toward", "towards",
    "under", "underneath", "up", "upon", "via", "with", "within", "without", "and", "or", "but", "nor", "so",
    "yet", "while", "because", "if", "than", "then", "though", "where", "when", "is", "are", "was", "were",
    "be", "been", "being", "am", "has", "have", "had", "do", "does", "did", "can", "could", "will", "would",
    "should", "may", "might", "must", "not", "there", "here", "very", "too", "also", "just", "only",
    "together", "away",
]
MAX_NOUN_PHRASE_WORDS = 4  # words read after a number or a determiner to find the noun

# Synonyms that mean the same thing in a caption (both ways where both hold), lower case.
# Nouns keep their number (`couches` -> `sofas`); other words are replaced as they are.
NOUN_SYNONYMS = {
    "airplane": ["plane"], "plane": ["airplane"], "bicycle": ["bike"], "motorcycle": ["motorbike"],
    "motorbike": ["motorcycle"], "couch": ["sofa"], "sofa": ["couch"], "tv": ["television"],
    "television": ["tv"], "refrigerator": ["fridge"], "fridge": ["refrigerator"],
    "cell phone": ["cellphone", "mobile phone"], "cellphone": ["cell phone"], "mobile phone": ["cell phone"],
    "donut": ["doughnut"], "doughnut": ["donut"], "hair drier": ["hair dryer"], "hair dryer": ["hair drier"],
    "photo": ["photograph"], "photograph": ["photo"], "child": ["kid"], "kid": ["child"],
    "person": ["individual"], "automobile": ["car"], "railroad": ["railway"], "railway": ["railroad"],
}
WORD_SYNONYMS = {
    "large": ["big"], "big": ["large"], "small": ["little"], "gray": ["grey"], "grey": ["gray"],
    "next to": ["beside"], "beside": ["next to"], "near": ["close to"], "on top of": ["atop"],
    "atop": ["on top of"], "beneath": ["underneath"], "underneath": ["beneath"],
}

# The templates and prefixes that also read right around a sentence with its own verb
# (`A man is riding a horse` cannot follow `a photo of`); a noun phrase takes them all.
SENTENCE_TEMPLATES = ["{}", "{} in the scene", "In this image, {}", "In the picture, {}"]

# Passive rewrites of "DET subject (is|are) V-ing DET object [tail]", "DET subject V-ing
# DET object [tail]" and "DET subject V-s DET object [tail]". A tail must start with one
# of these prepositions (where the scene is), so it reads the same after the agent.
PASSIVE_DETERMINERS = ["a", "an", "the"] + NUMBER_WORDS_V2
PASSIVE_TAIL_PREPOSITIONS = ["on", "in", "at", "near", "next", "along", "across", "through", "down", "up", "over",
                             "under", "beside", "behind", "inside", "outside", "around", "into", "onto", "from",
                             "above", "below", "beneath", "underneath", "against", "between", "atop"]
# The passive verb phrase for each form of the active verb (see active_verb).
PASSIVE_VERB_PHRASES = {"progressive": "{be} being {participle}", "participle": "being {participle}",
                        "present": "{be} {participle}"}
# Verbs whose following noun phrase is not their object ("going the wrong way"), or whose
# passive is not English ("a drink is being had").
NON_PASSIVE_VERBS = ["be", "have", "get", "go", "come", "sit", "stand", "lie", "lay", "sleep", "stay", "wait",
                     "head", "look", "face", "seem", "become", "pose", "cost", "weigh"]

# A word: letters and digits, with hyphens and apostrophes inside or an apostrophe after,
# so "red-and-white", "two-story", "dog's" and "dogs'" are one word each and never flip.
_WORD_V2 = re.compile(r"\w+(?:['’-]\w+)*['’]?")
_FUNCTION_WORDS = frozenset(FUNCTION_WORDS)
_COLOR_CANONICAL = {**{color: color for color in COLORS_V2}, **COLOR_SPELLINGS}
_PLURAL_VERBS = {plural: singular for singular, plural in AGREEING_VERBS.items()}


class Word(NamedTuple):
    """A word of a text: its characters, where it is, and whether only white space
    separates it from the word before (False for the first word and after punctuation)."""
    text: str
    start: int
    end: int
    spaced: bool

    @property
    def lower(self) -> str:
        return self.text.lower()


Edit = Tuple[int, int, str]  # replace text[start:end] by the string


class PhraseTable(dict):
    """A dict whose keys are lower-case words joined by single spaces (`hot dog`), and
    which knows how many words its longest key has."""

    def __init__(self, items):
        super().__init__(items)
        self.longest = max(len(key.split()) for key in self)


_NUMBER_BOUND_WORDS = PhraseTable(dict.fromkeys(NUMBER_BOUND_WORDS))


def split_words(text: str) -> List[Word]:
    """The words of `text`, in order."""
    words: List[Word] = []
    for match in _WORD_V2.finditer(text):
        spaced = bool(words) and text[words[-1].end:match.start()].isspace()
        words.append(Word(match.group(), match.start(), match.end(), spaced))
    return words


def apply_edits(text: str, edits: List[Edit]) -> str:
    """`text` with every (start, end, replacement) applied; spans must not overlap."""
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def next_word(words: List[Word], index: int) -> Optional[Word]:
    """The word after words[index] when only white space separates them, else None."""
    return words[index + 1] if index + 1 < len(words) and words[index + 1].spaced else None


def previous_word(words: List[Word], index: int) -> Optional[Word]:
    """The word before words[index] when only white space separates them, else None."""
    return words[index - 1] if index > 0 and words[index].spaced else None


def phrase_at(words: List[Word], index: int, table: PhraseTable) -> Optional[Tuple[int, str]]:
    """The longest key of `table` that the words from `index` spell with only white
    space between them, as (index of its last word, key)."""
    for count in range(min(table.longest, len(words) - index), 0, -1):
        span = words[index:index + count]
        key = " ".join(word.lower for word in span)
        if key in table and all(word.spaced for word in span[1:]):
            return index + count - 1, key
    return None


def phrase_matches(words: List[Word], table: PhraseTable) -> List[Tuple[int, int, str]]:
    """Every place a key of `table` is spelled, left to right, longest first, without
    overlap: (first word, last word, key)."""
    matches = []
    index = 0
    while index < len(words):
        found = phrase_at(words, index, table)
        if found is None:
            index += 1
            continue
        last, key = found
        matches.append((index, last, key))
        index = last + 1
    return matches


def copy_case(original: str, replacement: str) -> str:
    """`replacement` in the capitalisation of `original`: all capitals when `original` has
    two or more letters, all capital (`DOG` -> `CAT`); a capital first letter when
    `original` has one (`Dog` -> `Cat`, `A` -> `An`); else as given. Acronyms (`TV`) are
    always written as acronyms and, as originals, carry no case of their own."""
    replacement = ACRONYMS.get(replacement, replacement)
    if original.lower() in ACRONYMS:
        return replacement
    if sum(c.isalpha() for c in original) >= 2 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def with_first_letter(text: str, upper: bool) -> str:
    """`text` with its first character upper- or lower-cased."""
    return (text[:1].upper() if upper else text[:1].lower()) + text[1:]


def keep_initial_capital(original: str, rewritten: str) -> str:
    """`rewritten` starting with a capital when `original` does (an acronym replaced at
    the start: `TV on a stand` -> `Television on a stand`)."""
    return with_first_letter(rewritten, upper=True) if original[:1].isupper() else rewritten


@functools.lru_cache(maxsize=None)
def _inflect_engine():
    import inflect  # on first use only: importing inflect takes seconds
    return inflect.engine()


@functools.lru_cache(maxsize=None)
def plural_of(noun: str) -> str:
    """The plural of a lower-case singular noun or compound (`person` -> `people`)."""
    return _inflect_engine().plural_noun(noun)


@functools.lru_cache(maxsize=None)
def singular_of(noun: str) -> str:
    """The singular of a lower-case plural noun or compound (`knives` -> `knife`)."""
    return _inflect_engine().singular_noun(noun) or noun


@functools.lru_cache(maxsize=None)
def indefinite_article(word: str) -> str:
    """`a` or `an`, whichever English puts before `word` (`an orange`, `a unicorn`)."""
    return _inflect_engine().a(word).split(" ", 1)[0].lower()


@functools.lru_cache(maxsize=None)
def dictionary_entry(word: str) -> Dict[str, Tuple[str, ...]]:
    """lemminflect's dictionary entry for a lower-case word, {part of speech: lemmas}
    (`dogs` -> {'NOUN': ('dog',), 'VERB': ('dog',)}); {} for a word it does not know."""
    import lemminflect
    return lemminflect.getAllLemmas(word)


def verb_lemma(word: str, tag: str) -> Optional[str]:
    """The lemma of `word` when `word` is the `tag` form (`VBG` riding, `VBZ` rides) of a
    verb in the dictionary, else None."""
    import lemminflect
    for lemma in dictionary_entry(word).get("VERB", ()):
        if word in lemminflect.getInflection(lemma, tag):
            return lemma
    return None


def verb_inflection(lemma: str, tag: str) -> str:
    """The `tag` form of a verb (`ride`, VBN -> `ridden`; `sit`, VBZ -> `sits`)."""
    import lemminflect
    return lemminflect.getInflection(lemma, tag)[0]


def category_forms(category: str) -> Tuple[Optional[str], Optional[str]]:
    """(singular, plural) of a category's noun or of one of its spellings, None where
    English has none (`scissors` has no singular, `broccoli` neither form)."""
    if category in PLURAL_CATEGORY_NAMES:
        return PLURAL_CATEGORY_NAMES[category], category
    if category in MASS_CATEGORY_NAMES:
        return None, None
    return category, plural_of(category)


class ObjectNoun(NamedTuple):
    """A word form of a COCO category: the category, and the form's number (`singular`,
    `plural`, `both` for `sheep`, `mass` for `broccoli`)."""
    category: str
    number: str


@functools.lru_cache(maxsize=None)
def object_nouns() -> PhraseTable:
    """{lower-case form: ObjectNoun} for every category and spelling, in both numbers."""
    table: Dict[str, ObjectNoun] = {}
    for spelling, category in [(c, c) for c in COCO_CATEGORIES] + list(OBJECT_SPELLINGS.items()):
        singular, plural = category_forms(spelling)
        if singular is None and plural is None:
            table[spelling] = ObjectNoun(category, "mass")
        elif singular == plural:
            table[spelling] = ObjectNoun(category, "both")
        else:
            table.update({form: ObjectNoun(category, number)
                          for form, number in [(singular, "singular"), (plural, "plural")] if form is not None})
    return PhraseTable(table)


@functools.lru_cache(maxsize=None)
def countable_categories() -> Tuple[str, ...]:
    """The categories with a singular and a plural, in COCO's order: the only ones a flip
    puts into a caption (no `a broccoli`, no `two scissors`)."""
    return tuple(category for category in COCO_CATEGORIES if None not in category_forms(category))


def number_value(word: str) -> Optional[int]:
    """1-10 for a lower-case number word one-ten or a digit string 1-10, else None."""
    if word in NUMBER_WORDS_V2:
        return NUMBER_WORDS_V2.index(word) + 1
    if word.isascii() and word.isdigit() and str(int(word)) == word and 1 <= int(word) <= 10:
        return int(word)
    return None


def count_of(word: str) -> Optional[int]:
    """How many a lower-case determiner counts: 1 for `a`/`an`, else number_value."""
    return 1 if word in INDEFINITE_ARTICLES else number_value(word)


def word_kind(word: str) -> str:
    """What a lower-case word can be in a noun phrase: `function` (closed-class words and
    numbers), `modifier` (colours, adjectives, participles like `sleeping` or `parked`),
    `noun`, or `other` (verbs, words the dictionary does not know)."""
    if word in _FUNCTION_WORDS or number_value(word) is not None:
        return "function"
    entry = dictionary_entry(word)
    if word in _COLOR_CANONICAL or "ADJ" in entry or ("VERB" in entry and word.endswith(("ing", "ed"))):
        return "modifier"
    return "noun" if "NOUN" in entry else "other"


def noun_number(word: str) -> str:
    """`singular`, `plural` or `both` (`fish`) for a lower-case dictionary noun."""
    lemmas = dictionary_entry(word)["NOUN"]
    if word not in lemmas:
        return "plural"
    return "both" if plural_of(word) == word else "singular"


class Noun(NamedTuple):
    """A noun in a caption: words first..last (two for `hot dog`), its number
    (`singular`, `plural`, `both`, `mass`) and its COCO category when it is a known object."""
    first: int
    last: int
    number: str
    category: Optional[str]


def object_at(words: List[Word], index: int) -> Optional[Noun]:
    """The COCO object whose name (longest first: `hot dog`, not `hot`) starts at
    words[index], else None (also for `orange` used as a colour)."""
    found = phrase_at(words, index, object_nouns())
    if found is None or (words[index].lower in _COLOR_CANONICAL and is_color_use(words, index)):
        return None
    last, form = found
    noun = object_nouns()[form]
    return Noun(index, last, noun.number, noun.category)


def noun_at(words: List[Word], index: int, bare_modifier: bool = False) -> Optional[Noun]:
    """The noun starting at words[index]: a COCO object (object_at), else a dictionary
    noun that is no modifier (with `bare_modifier`, also a modifier the dictionary has as
    a noun and not as an adjective, like `building`); None for anything else."""
    found = object_at(words, index)
    if found is not None:
        return found
    word = words[index].lower
    entry = dictionary_entry(word)
    kind = word_kind(word)
    if kind == "noun" or (bare_modifier and kind == "modifier" and "NOUN" in entry and "ADJ" not in entry
                          and word not in _COLOR_CANONICAL):
        return Noun(index, index, noun_number(word), None)
    return None


def noun_phrase_head(words: List[Word], start: int, plural: bool) -> Optional[Noun]:
    """The head of the noun phrase at words[start], read as plural or singular: modifiers
    (colours, adjectives, participles), then nouns, white space between. A plural phrase's
    head is its first plural noun (`two bus stops`, `two dogs play`); a singular phrase's,
    its last singular noun before anything else (`one bus stop`, `one dog runs`, `an
    orange cat`, `a dog sitting`); a modifier that is also a noun heads a singular phrase
    when nothing nominal follows it (`one building`). None when the phrase has no head of
    that number (`one of`, `two orange`) or its head is a mass noun. Only the first word
    of a caption may follow no white space."""
    nouns: List[Noun] = []
    index = start
    while index < min(len(words), start + MAX_NOUN_PHRASE_WORDS) and (index == 0 or words[index].spaced):
        noun = noun_at(words, index)
        if noun is None:
            if nouns or word_kind(words[index].lower) != "modifier":
                break
            index += 1
            continue
        if noun.number == "mass" or (noun.number == "plural" and not plural):
            break
        if plural and noun.number != "singular":
            return noun
        nouns.append(noun)  # in a plural phrase, a singular noun modifies the head: "bus stops"
        index = noun.last + 1
    if plural:
        return None
    if not nouns and index > start:
        bare = noun_at(words, index - 1, bare_modifier=True)
        nouns = [bare] if bare is not None and bare.number != "plural" else []
    return nouns[-1] if nouns else None


def article_agreement(words: List[Word], index: int, new_text: str) -> List[Edit]:
    """The edit that makes an `a`/`an` right before words[index] fit `new_text`, the words
    that now start there (`a orange` -> `an orange`); [] when it fits or there is none."""
    article = previous_word(words, index)
    if article is None or article.lower not in INDEFINITE_ARTICLES:
        return []
    wanted = indefinite_article(new_text.split()[0])
    return [] if wanted == article.lower else [(article.start, article.end, copy_case(article.text, wanted))]


def present_tense(word: str, plural: bool) -> Optional[str]:
    """A lower-case present-tense verb in the form that agrees with a plural or singular
    subject (`is` -> `are`, `sits` -> `sit`, `play` -> `plays`); None for other words."""
    if word in AGREEING_VERBS or word in _PLURAL_VERBS:
        singular = _PLURAL_VERBS.get(word, word)
        return AGREEING_VERBS[singular] if plural else singular
    lemma = None if word in _FUNCTION_WORDS else verb_lemma(word, "VBZ") or verb_lemma(word, "VBP")
    return None if lemma is None else verb_inflection(lemma, "VBP" if plural else "VBZ")


def verb_agreement(words: List[Word], first: int, last: int, plural: bool) -> List[Edit]:
    """Edits that make the present-tense verb right after the noun phrase
    words[first..last], and one between `there` and it, agree with `plural`."""
    verbs = [next_word(words, last)]
    before = previous_word(words, first)
    there = previous_word(words, first - 1) if before is not None else None
    if there is not None and there.lower == "there":
        verbs.append(before)
    edits = []
    for verb in verbs:
        wanted = None if verb is None else present_tense(verb.lower, plural)
        if wanted is not None and wanted != verb.lower:
            edits.append((verb.start, verb.end, copy_case(verb.text, wanted)))
    return edits


# --- flips ------------------------------------------------------------------------

class ColorSite(NamedTuple):
    """A colour flip: words[index] is a colour; `options` the colours it may become."""
    index: int
    options: List[str]


class NumberSite(NamedTuple):
    """A number flip: words[index] is a number (or `a`/`an`) of `value` counting `head`;
    `options` the numbers, written like it, it may become."""
    index: int
    value: int
    head: Noun
    options: List[str]


class ObjectSite(NamedTuple):
    """An object flip: `noun` is a COCO object; `options` the categories it may become,
    written in `plural` or singular."""
    noun: Noun
    plural: bool
    options: List[str]


def is_color_use(words: List[Word], index: int) -> bool:
    """Whether the colour word at words[index] names a colour. Only a colour that is also
    an object (`orange`) can be something else: it is the colour when a noun, a colour, or
    `and`/`or` and a colour follow it (`an orange cat`, `orange and white`), else the fruit
    (`an orange on a plate`, `an orange sitting on a table`)."""
    if words[index].lower not in object_nouns():
        return True
    following = next_word(words, index)
    if following is None:
        return False
    if following.lower in ("and", "or"):
        after = next_word(words, index + 1)
        return after is not None and after.lower in _COLOR_CANONICAL
    return following.lower in _COLOR_CANONICAL or noun_at(words, index + 1) is not None


def color_site(words: List[Word]) -> Optional[ColorSite]:
    """The leftmost colour word used as a colour; its options are the colours (COLORS_V2
    order) that the caption does not mention in any spelling."""
    mentioned = [_COLOR_CANONICAL[word.lower] for word in words if word.lower in _COLOR_CANONICAL]
    for index, word in enumerate(words):
        if word.lower in _COLOR_CANONICAL and is_color_use(words, index):
            return ColorSite(index, [color for color in COLORS_V2 if color not in mentioned])
    return None


def rewrite_color(caption: str, words: List[Word], site: ColorSite, color: str) -> str:
    """The caption with the site's colour replaced by `color`, case copied, a/an agreed."""
    word = words[site.index]
    written = copy_case(word.text, color)
    return apply_edits(caption, [(word.start, word.end, written)] + article_agreement(words, site.index, written))


def number_site(words: List[Word]) -> Optional[NumberSite]:
    """The leftmost number (one-ten, 1-10) that counts a noun of its number (`two dogs`,
    `one bus stop`), or `a`/`an` counting a countable COCO object (`a dog`, `an orange
    cat`). A number glued to punctuation (`#2`, `10:30`) counts nothing. Options: the
    other numbers 1-10 (never one for `a`), as digits for a digit, else as words; only
    those of the same grammatical number when a NUMBER_BOUND_WORDS word follows."""
    for index, word in enumerate(words):
        value = count_of(word.lower)
        if value is None or (index > 0 and not word.spaced):
            continue
        head = noun_phrase_head(words, index + 1, plural=value > 1)
        if head is None:
            continue
        countable = head.category in countable_categories() if head.category else word.lower not in INDEFINITE_ARTICLES
        if not countable:
            continue
        bound = any(first > head.last for first, _last, _key in phrase_matches(words, _NUMBER_BOUND_WORDS))
        numbers = [n for n in range(1, len(NUMBER_WORDS_V2) + 1)
                   if n != value and not (bound and (n > 1) != (value > 1))]
        if numbers:
            written = [str(n) if word.text.isdigit() else NUMBER_WORDS_V2[n - 1] for n in numbers]
            return NumberSite(index, value, head, written)
    return None


def rewrite_number(caption: str, words: List[Word], site: NumberSite, number: str) -> str:
    """The caption with the site's number replaced by `number`; when the count crosses
    one, the head noun takes the new number and the verbs around agree."""
    word = words[site.index]
    edits = [(word.start, word.end, copy_case(word.text, number))]
    plural = number_value(number) > 1
    if plural != (site.value > 1):
        first, last = words[site.head.first], words[site.head.last]
        head = caption[first.start:last.end]
        inflected = plural_of(head.lower()) if plural else singular_of(head.lower())
        edits.append((first.start, last.end, copy_case(head, inflected)))
        edits += verb_agreement(words, site.index, site.head.last, plural)
    return apply_edits(caption, edits)


def object_mentions(words: List[Word]) -> List[Noun]:
    """The COCO objects a caption names, left to right (`orange` used as a colour is not
    one)."""
    mentions = [object_at(words, first) for first, _last, _form in phrase_matches(words, object_nouns())]
    return [noun for noun in mentions if noun is not None]


def object_site(words: List[Word]) -> Optional[ObjectSite]:
    """The leftmost COCO object; its options are the countable categories the caption
    does not mention, in COCO's order. The replacement keeps the object's number (`sheep`
    is singular after `a`/`one`/`this`... or before `is`/`was`/`has`, else plural); a mass
    noun (`broccoli`) becomes a plural (`carrots`)."""
    mentions = object_mentions(words)
    if not mentions:
        return None
    noun = mentions[0]
    if noun.number == "both":
        before, after = previous_word(words, noun.first), next_word(words, noun.last)
        plural = not ((before is not None and before.lower in SINGULAR_DETERMINERS)
                      or (after is not None and after.lower in AGREEING_VERBS))
    else:
        plural = noun.number != "singular"
    mentioned = [mention.category for mention in mentions]
    return ObjectSite(noun, plural, [category for category in countable_categories() if category not in mentioned])


def rewrite_object(caption: str, words: List[Word], site: ObjectSite, category: str) -> str:
    """The caption with the site's object replaced by `category` in the site's number,
    case copied, a/an agreed, and (after a mass noun) the verb made plural."""
    first, last = words[site.noun.first], words[site.noun.last]
    singular, plural = category_forms(category)
    written = copy_case(caption[first.start:last.end], plural if site.plural else singular)
    edits = [(first.start, last.end, written)] + article_agreement(words, site.noun.first, written)
    if site.noun.number == "mass":
        edits += verb_agreement(words, site.noun.first, site.noun.last, plural=True)
    return apply_edits(caption, edits)


# flip type -> (site finder, rewrite); the types and their order are the paper's
V2_FLIP_RULES = {"color": (color_site, rewrite_color), "number": (number_site, rewrite_number),
                 "object": (object_site, rewrite_object)}


def flip_v2(caption: str, flip_type: str, rng) -> Optional[str]:
    """One v2 flip of the stripped `caption`: its leftmost site of the type, turned into
    `rng.choice(site.options)`; a caption that started with a capital still does. None,
    and no draw, when there is no site or no option."""
    text = caption.strip()
    words = split_words(text)
    find_site, rewrite = V2_FLIP_RULES[flip_type]
    site = find_site(words)
    if site is None or not site.options:
        return None
    return keep_initial_capital(text, rewrite(text, words, site, rng.choice(site.options)))


# --- paraphrases ------------------------------------------------------------------

def tidy(caption: str) -> str:
    """The caption on one line: white space runs made one space, none at the ends or
    before punctuation (`in the street .` -> `in the street.`)."""
    return re.sub(r" ([.,!?;:])", r"\1", " ".join(caption.split()))


def split_end_punctuation(sentence: str) -> Tuple[str, str]:
    """(body, end): a tidy sentence without its final `.`, `!`, `?` (or `...`), and those."""
    body = sentence.rstrip(".!?")
    return body.rstrip(), sentence[len(body):]


def mid_sentence(text: str) -> str:
    """`text` as it reads after other words: its first letter lower-cased, unless its
    first word looks like an acronym or a name: `I`, two or more letters all capital
    (`DOG`, `TV`), or a capital after the first letter (`McDonald's`, `iPhone`)."""
    words = split_words(text)
    first = words[0].text if words else ""
    if first == "I" or (len(first) >= 2 and first.isupper()) or any(c.isupper() for c in first[1:]):
        return text
    return with_first_letter(text, upper=False)


def like_caption_start(body: str, text: str) -> str:
    """`text` beginning as the caption `body` begins: with a capital if it does."""
    return with_first_letter(text, upper=True) if body[:1].isupper() else mid_sentence(text)


def is_sentence(words: List[Word]) -> bool:
    """Whether a caption is a sentence with its own verb (`A man is riding a horse`,
    `There is a dog`, `A cat sits on a mat`, `Two dogs play`) rather than a noun phrase
    (`A man riding a horse`, `Two bus stops`, `A dog that is asleep`): it has a form of
    be or have not right after a relative pronoun, or a present-tense verb right after
    its first noun phrase or a pronoun it starts with (`someone stands`)."""
    for index, word in enumerate(words):
        if (word.lower in AGREEING_VERBS or word.lower in _PLURAL_VERBS) and (
                index == 0 or words[index - 1].lower not in RELATIVE_PRONOUNS):
            return True
    if not words:
        return False
    if words[0].lower in SUBJECT_PRONOUNS:
        subjects = [(0, False), (0, True)]  # (index of the subject's last word, plural)
    else:
        count = count_of(words[0].lower)
        start = 1 if count is not None or words[0].lower in _FUNCTION_WORDS else 0
        numbers = [count > 1] if count else [False, True]
        heads = [(noun_phrase_head(words, start, plural), plural) for plural in numbers]
        subjects = [(head.last, plural) for head, plural in heads if head is not None]
    for last, plural in subjects:
        verb = next_word(words, last)
        if verb is not None and present_tense(verb.lower, plural) == verb.lower:
            return True
    return False


def filled_templates(caption: str) -> List[Tuple[str, str]]:
    """TEMPLATES (kind `template`) and PREFIXES (`prefix`) filled with the tidy caption,
    only SENTENCE_TEMPLATES when it is a sentence (see is_sentence): mid-sentence it
    starts in lower case (see mid_sentence); its final punctuation goes to the end of the
    paraphrase (`A man riding a horse in the scene.`); the paraphrase begins with a
    capital if the caption does."""
    body, end = split_end_punctuation(tidy(caption))
    if not body:
        return []
    filled = [(template, "template") for template in TEMPLATES] + [(prefix, "prefix") for prefix in PREFIXES]
    if is_sentence(split_words(body)):
        filled = [(template, kind) for template, kind in filled if template in SENTENCE_TEMPLATES]
    return [(like_caption_start(body, template.format(body if template.startswith("{}") else mid_sentence(body)) + end),
             kind) for template, kind in filled]


def distinct_paraphrases(caption: str, items: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """`items` without repeats (first kept), texts under five characters, and texts equal
    to the caption up to case and white space."""
    same = tidy(caption).lower()
    return [(text, kind) for text, kind in _unique_keep_first(items)
            if len(text) >= MIN_TEXT_CHARS and tidy(text).lower() != same]


@functools.lru_cache(maxsize=None)
def synonym_table() -> PhraseTable:
    """{lower-case word or phrase: its synonyms}: WORD_SYNONYMS as they are, NOUN_SYNONYMS
    in both numbers (`couches` -> [`sofas`])."""
    table = {key: list(synonyms) for key, synonyms in WORD_SYNONYMS.items()}
    for noun, synonyms in NOUN_SYNONYMS.items():
        table[noun] = list(synonyms)
        table[plural_of(noun)] = [plural_of(synonym) for synonym in synonyms]
    return PhraseTable(table)


def synonym_paraphrases_v2(caption: str) -> List[str]:
    """The stripped caption with one word or phrase of the synonym tables replaced, for
    each place (left to right) and synonym; case copied, a/an agreed, an initial capital
    kept."""
    text = caption.strip()
    words = split_words(text)
    table = synonym_table()
    rewrites = []
    for first, last, key in phrase_matches(words, table):
        original = text[words[first].start:words[last].end]
        for synonym in table[key]:
            written = copy_case(original, synonym)
            edits = [(words[first].start, words[last].end, written)] + article_agreement(words, first, written)
            rewrites.append(keep_initial_capital(text, apply_edits(text, edits)))
    return rewrites


def is_noun_phrase(words: List[Word], first: int, last: int) -> bool:
    """Whether words[first..last] are modifiers and nouns (COCO names count as nouns), at
    most MAX_NOUN_PHRASE_WORDS, the last a noun."""
    if not 0 < last - first + 1 <= MAX_NOUN_PHRASE_WORDS or noun_at(words, last) is None:
        return False
    index = first
    while index <= last:
        noun = noun_at(words, index)
        if noun is None and word_kind(words[index].lower) != "modifier":
            return False
        index = index + 1 if noun is None else noun.last + 1
    return True


def active_verb(words: List[Word]) -> Optional[Tuple[int, int, str, str]]:
    """The verb after a caption's subject (a determiner at words[0], then up to
    MAX_NOUN_PHRASE_WORDS words): (index of the subject's last word, index of the verb,
    its lemma, its form: `progressive` for `is riding`, `participle` for `riding`,
    `present` for `rides`). None when no such verb comes first."""
    for index in range(2, min(len(words) - 2, 2 + MAX_NOUN_PHRASE_WORDS)):
        word = words[index].lower
        if word in ("is", "are"):
            lemma = verb_lemma(words[index + 1].lower, "VBG")
            return (index - 1, index + 1, lemma, "progressive") if lemma else None
        for tag, form in (("VBG", "participle"), ("VBZ", "present")):
            lemma = verb_lemma(word, tag)
            if lemma:
                return index - 1, index, lemma, form
    return None


def passive_paraphrases_v2(caption: str) -> List[str]:
    """The passive of a caption that is one transitive clause: a determiner and a noun
    phrase, the verb, a determiner and a noun phrase, optionally a tail that starts with
    a preposition of place. `A man is riding a horse.` -> `A horse is being ridden by a
    man.`; `A man riding a horse on a beach` -> `A horse being ridden by a man on a
    beach`; `A man rides a horse.` -> `A horse is ridden by a man.` The verb agrees with
    the new subject (`are` for `two horses`); the participle is lemminflect's. [] for
    anything else: punctuation inside, no determiner, a verb in NON_PASSIVE_VERBS, an
    object whose number cannot be told (`the sheep`)."""
    body, end = split_end_punctuation(tidy(caption))
    words = split_words(body)
    if not words or words[0].start != 0 or not all(word.spaced for word in words[1:]):
        return []
    verb = active_verb(words) if words[0].lower in PASSIVE_DETERMINERS else None
    if verb is None:
        return []
    subject_last, verb_index, lemma, form = verb
    determiner = verb_index + 1
    if (lemma in NON_PASSIVE_VERBS or not is_noun_phrase(words, 1, subject_last)
            or determiner >= len(words) or words[determiner].lower not in PASSIVE_DETERMINERS):
        return []
    tail = next((index for index in range(determiner + 1, len(words))
                 if words[index].lower in PASSIVE_TAIL_PREPOSITIONS), len(words))
    if not is_noun_phrase(words, determiner + 1, tail - 1):
        return []
    count = count_of(words[determiner].lower)
    number = noun_at(words, tail - 1).number if count is None else ("plural" if count > 1 else "singular")
    if number == "both":
        return []
    verb_phrase = PASSIVE_VERB_PHRASES[form].format(be="are" if number == "plural" else "is",
                                                    participle=verb_inflection(lemma, "VBN"))
    new_subject = body[words[determiner].start:words[tail - 1].end]
    agent = mid_sentence(body[:words[subject_last].end])
    rest = body[words[tail].start:] if tail < len(words) else ""
    return [like_caption_start(body, " ".join(filter(None, [new_subject, verb_phrase, "by", agent, rest])) + end)]


def enhanced_paraphrases_v2(caption: str) -> List[Tuple[str, str]]:
    """The v2 paraphrases for the rebuttal generator as (text, kind): templates and
    prefixes (filled_templates), passive, synonyms, in that order, distinct."""
    return distinct_paraphrases(caption, filled_templates(caption)
                                + [(text, "passive") for text in passive_paraphrases_v2(caption)]
                                + [(text, "synonym") for text in synonym_paraphrases_v2(caption)])


def template_paraphrases_v2(caption: str) -> List[Tuple[str, str]]:
    """The v2 template and prefix paraphrases as (text, kind), distinct."""
    return distinct_paraphrases(caption, filled_templates(caption))


# ---------------------------------------------------------------------------
# Rule sets: what --rules chooses
# ---------------------------------------------------------------------------


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


def positive_int(text: str) -> int:
    """argparse type for --limit and the like."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def generator_arguments(description: str, default_input: str, output_pattern: str, seed: int,
                        rules: Optional[str] = "paper") -> argparse.ArgumentParser:
    """The flags every generator takes; each default is the script's UPPERCASE constant.
    `rules=None` leaves out --rules, for a generator that has no paper/v2 choice."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=default_input, help=f"base JSONL with 'orig_captions' (default: {default_input})")
    parser.add_argument("--output", default=None,
                        help=f"output JSONL (default: {output_pattern.format(stem='<input stem>')} beside the input; "
                             f"with --rules v2, ending in _v2.jsonl)")
    parser.add_argument("--seed", type=int, default=seed, help=f"seed of the random draws (default: {seed}, the release's)")
    parser.add_argument("--limit", type=positive_int, default=None, help="process only the first N records")
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
    output_path = args.output or default_output_path(args.input, default_pattern)

    def perturb_and_label(captions: List[str], counts: Counter) -> Dict[str, Any]:
        new_keys = perturb_captions(captions, counts)
        if rules.labels_records:
            new_keys["rules"] = rules.name
        return new_keys

    started = time.perf_counter()
    counts = generate_file(args.input, output_path, perturb_and_label, limit=args.limit)
    print_summary(counts, output_path, time.perf_counter() - started, rules.name)


# ---------------------------------------------------------------------------
# Compositional probes (make_compositional_perturb.py)
# ---------------------------------------------------------------------------
# Every word stays; only order or binding changes. Word-order shuffles as ARO's
# COCO-Order makes them (Yuksekgonul et al., 2023), and meaning-changing swaps of
# attributes between two objects or of the subject and object of a relation. Tokens and
# part-of-speech tags come from one function: `tag_lexicon` (the lexicon `lemminflect`
# ships on PyPI, plus context rules; nothing downloaded) or, with `--tagger spacy`,
# spaCy's en_core_web_sm, which ARO used.

import functools  # noqa: E402  (this section keeps its imports with it)
from typing import NamedTuple  # noqa: E402

from lgip.io import InputError  # noqa: E402

ORDER_TYPES = ["shuffle_nouns_adjs", "shuffle_allbut_nouns_adjs", "shuffle_within_trigrams", "shuffle_trigrams"]
SWAP_TYPES = ["attribute", "relation"]
ORDER_PUNCTUATION = '.!"()*#:;~'  # ARO's pre_caption turns these into spaces
ORDER_MAX_WORDS = 30  # ARO's COCO-Order keeps the first 30 words
ORDER_NORMALISATION = ("ARO's COCO-Order pre_caption: lower case; the characters " + ORDER_PUNCTUATION
                       + " as spaces; split into words, other punctuation and 's as tokens of their own; the first "
                       + f"{ORDER_MAX_WORDS} tokens, joined by single spaces. Applied to the original (order_orig) "
                       + "and to every shuffle (order_caps) alike.")
TAGGERS = ("lexicon", "spacy")
SPACY_MODEL = "en_core_web_sm"
NOUN_ADJ = ("NOUN", "ADJ")

_TOKEN_PATTERN = re.compile(r"[^\W_]+(?:-[^\W_]+)*|['\u2019][^\W_]+|\S")
_ORDER_PUNCTUATION_PATTERN = re.compile("[" + re.escape(ORDER_PUNCTUATION) + "]")

# Closed-class words, which a lexicon of open-class words does not cover.
_CLOSED_CLASS = {
    "DET": "a an the this that these those some each every another both either neither no any all",
    "PRON": "it its he him his she her hers they them their theirs we us our you your i me my mine itself himself "
            "herself themselves someone somebody something everyone everybody everything anyone anything nobody "
            "nothing who whom whose which what there",
    "ADP": "about above across after against along alongside amid amidst among around as at atop before behind below "
           "beneath beside besides between beyond by despite down during for from in inside into like near of off on "
           "onto out outside over past per through throughout to toward towards under underneath until up upon via "
           "with within without",
    "CCONJ": "and or but nor",
    "SCONJ": "while because if whilst although though since where when whether",
    "AUX": "is are was were be been being am has have had do does did can could will would shall "
           "should may might must isn aren wasn weren don doesn didn",  # isn 't: the tokens of isn't
    "PART": "'s \u2019s 't ' not",
    "NUM": "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
           "seventeen eighteen nineteen twenty thirty forty fifty hundred thousand dozen",
    "ADV": "very together also just too here away nearby almost really so quite rather outdoors indoors",
}
_CLOSED = {word: tag for tag, words in _CLOSED_CLASS.items() for word in words.split()}
_POSSESSIVE = {"his", "her", "its", "their", "my", "your", "our"}
# Where the lexicon misleads: many/few/other only as nouns, top never as a noun, pan
# only as a verb. Colours are adjectives before a noun, whatever else the lexicon allows.
_EXTRA_CLASSES = {"many": {"ADJ"}, "few": {"ADJ"}, "other": {"ADJ"}, "top": {"NOUN", "ADJ"}, "pan": {"NOUN", "VERB"}}
_COLOUR_WORDS = set(COLORS) | {"grey", "silver", "golden", "gold", "tan", "beige", "maroon", "navy", "teal", "violet",
                               "turquoise", "blond", "blonde", "colorful", "colourful"}

# Swaps: adjectives that quantify or order rather than describe, relations that read the
# same both ways, and words that make a swap unsafe.
NON_ATTRIBUTE_ADJECTIVES = {"several", "many", "few", "other", "same", "next", "own", "various", "different", "more",
                            "most", "much", "such", "last", "first", "second", "third", "only", "single", "each",
                            "both", "whole", "entire", "numerous", "multiple"}
SYMMETRIC_RELATION_WORDS = {"and", "or", "with", "near", "beside", "by", "next", "alongside", "among", "between",
                            "together", "opposite", "of", "like", "meeting", "hugging", "kissing", "talking",
                            "chatting", "fighting", "playing"}


def caption_tokens(text: str) -> List[Tuple[str, int, int]]:
    """(token, start, end) for each token of `text`: words (hyphenated ones whole), a
    clitic such as 's, or any other single character that is not white space."""
    return [(match.group(), match.start(), match.end()) for match in _TOKEN_PATTERN.finditer(text)]


def normalise_caption(caption: str, max_words: Optional[int] = ORDER_MAX_WORDS) -> str:
    """ARO's pre_caption for COCO-Order (lower case, its punctuation as spaces), then
    tokens joined by single spaces and cut to `max_words` (None: all): every text the
    order probe scores, the original included, has this form, so punctuation cannot tell
    them apart."""
    lowered = _ORDER_PUNCTUATION_PATTERN.sub(" ", caption.lower())
    return " ".join(token for token, _start, _end in caption_tokens(lowered)[:max_words])


# --- part-of-speech tags ------------------------------------------------------------

def _lemminflect():
    try:
        import lemminflect
    except ImportError:
        raise InputError("--tagger lexicon needs the lemminflect package (pip install lemminflect)") from None
    return lemminflect


@functools.lru_cache(maxsize=1 << 16)
def _open_classes(word: str) -> frozenset:
    """The open classes (NOUN, VERB, ADJ, ADV) the lexicon allows for a lower-case word;
    for a word it lacks, a guess from the ending (-ly ADV, -ing and -ed VERB, else NOUN)."""
    if word in _EXTRA_CLASSES:
        return frozenset(_EXTRA_CLASSES[word])
    found = {("NOUN" if upos == "PROPN" else upos) for upos in dictionary_entry(word)}
    found &= {"NOUN", "VERB", "ADJ", "ADV"}
    if found:
        return frozenset(found)
    if word.endswith("ly"):
        return frozenset({"ADV"})
    return frozenset({"VERB"}) if word.endswith(("ing", "ed")) and len(word) > 4 else frozenset({"NOUN"})


@functools.lru_cache(maxsize=1 << 16)
def _gradable(word: str) -> bool:
    """True when the lexicon has a comparative for the word (larger, redder): a real
    adjective, not a noun that can modify (video game, corner store)."""
    return "JJR" in _lemminflect().getAllInflections(word, upos="ADJ")


def _third_person(word: str) -> bool:
    """An -s form the lexicon reads as an inflected verb (catches), not a verb's base (bus)."""
    return word.endswith("s") and word not in dictionary_entry(word).get("VERB", (word,))


def _word_classes(word: str, next_word: str) -> frozenset:
    if word == "next" and next_word == "to":
        return frozenset({"ADV"})
    if word in _CLOSED:
        return frozenset({_CLOSED[word]})
    if any(ch.isdigit() for ch in word):
        return frozenset({"NUM"})
    if not any(ch.isalpha() for ch in word):
        return frozenset({"PUNCT"})
    return _open_classes(word)


def _has_determiner(tags: List[str], words: List[str], end: int) -> bool:
    """Whether the noun phrase ending at `end` (inclusive) starts with a determiner,
    number or possessive: then it is complete, and a following -s word is a verb."""
    position = end
    while position >= 0 and tags[position] in ("NOUN", "ADJ"):
        position -= 1
    return position >= 0 and (tags[position] in ("DET", "NUM") or words[position] in _POSSESSIVE)


def _resolve(word: str, classes: frozenset, position: int, words: List[str], tags: List[str], next_classes) -> str:
    """One ambiguous word's tag from its neighbours: the tags already given on its left
    and the classes the lexicon allows on its right."""
    previous = tags[position - 1] if position else None
    next_word = words[position + 1] if position + 1 < len(words) else ""
    noun_follows = "NOUN" in next_classes and not (next_word.endswith("ing") and "VERB" in next_classes)
    verb_form = word.endswith(("ing", "ed", "en"))
    adjective = "ADJ" in classes and (word in _COLOUR_WORDS or "NOUN" not in classes or _gradable(word))
    if adjective and noun_follows:
        return "ADJ"  # black dog, calm water, empty road (but: video game, living room)
    after_next = words[position + 2] if position + 2 < len(words) else ""
    if adjective and next_word in ("and", "or") and "ADJ" in _word_classes(after_next, ""):
        return "ADJ"  # black and white dog
    if previous == "AUX":
        if "VERB" in classes and verb_form:
            return "VERB"
        if "ADJ" in classes:
            return "ADJ"
    if previous == "VERB" and "ADV" in classes and not noun_follows:
        return "ADV"  # flying high
    if "NOUN" in classes:
        if previous is None or previous in ("DET", "NUM", "ADJ", "ADP", "PUNCT", "PART") or words[position - 1] in _POSSESSIVE:
            return "NOUN"
        if previous == "VERB" and not word.endswith("ing"):
            return "NOUN"  # eating leaves
        if previous == "NOUN" and "VERB" in classes:
            if word.endswith("ing"):
                return "VERB"  # man riding
            if _third_person(word) and _has_determiner(tags, words, position - 1):
                return "VERB"  # a dog catches (but: street signs, a double decker bus)
            return "NOUN"  # stop sign, traffic light
        if previous == "CCONJ" and position >= 2 and tags[position - 2] in classes:
            return tags[position - 2]  # sink and mirror
    for tag in ("NOUN", "VERB", "ADJ", "ADV"):
        if tag in classes:
            return tag
    return sorted(classes)[0]


def tag_lexicon(tokens: List[str]) -> List[str]:
    """Universal POS tags for `tokens` (NOUN, ADJ, VERB, DET, ADP, ...), offline: closed
    classes from a word list, open classes from lemminflect's lexicon, an ambiguous word
    decided left to right by its neighbours. Only NOUN and ADJ matter to the shuffles;
    tests/data/pos_gold.tsv measures how often they agree with hand tags."""
    words = [token.lower() for token in tokens]
    classes = [_word_classes(word, words[i + 1] if i + 1 < len(words) else "") for i, word in enumerate(words)]
    tags: List[str] = []
    for position, word in enumerate(words):
        options = classes[position]
        next_classes = classes[position + 1] if position + 1 < len(words) else frozenset()
        tags.append(next(iter(options)) if len(options) == 1
                    else _resolve(word, options, position, words, tags, next_classes))
    return tags


def spacy_tagger(model_name: str = SPACY_MODEL) -> Callable[[List[str]], List[str]]:
    """A drop-in for `tag_lexicon` backed by spaCy (ARO's choice): it tags the given
    tokens as they are (no re-tokenising), NOUN for Penn tags NN*, ADJ for JJ*, as ARO
    reads them. InputError when spaCy or the model is not installed."""
    try:
        import spacy
        from spacy.tokens import Doc
    except ImportError:
        raise InputError(f"--tagger spacy: spaCy is not installed (pip install spacy && python -m spacy download "
                         f"{model_name}); or use --tagger lexicon") from None
    try:
        nlp = spacy.load(model_name, exclude=["parser", "ner", "lemmatizer"])
    except (OSError, ImportError) as err:
        raise InputError(f"--tagger spacy: spaCy's model {model_name} could not be loaded (python -m spacy download "
                         f"{model_name}; {str(err).splitlines()[0]}); or use --tagger lexicon") from None

    def tag_spacy(tokens: List[str]) -> List[str]:
        if not tokens:
            return []
        doc = nlp(Doc(nlp.vocab, words=list(tokens)))
        return ["NOUN" if t.tag_.startswith("NN") else "ADJ" if t.tag_.startswith("JJ")
                else ("X" if t.pos_ in ("NOUN", "PROPN", "ADJ") else t.pos_) for t in doc]

    return tag_spacy


def make_tagger(name: str) -> Callable[[List[str]], List[str]]:
    """The tagger `--tagger NAME` names: `lexicon` (offline) or `spacy`."""
    if name == "lexicon":
        _lemminflect()  # fail now, with the install hint, not on the first caption
        return tag_lexicon
    if name == "spacy":
        return spacy_tagger()
    raise InputError(f"--tagger {name!r}: expected one of {', '.join(TAGGERS)}")


# --- word-order shuffles (ARO's COCO-Order) ------------------------------------------

def _trigrams(items: list) -> List[list]:
    """Consecutive chunks of three, the last one shorter (7 tokens: 3 + 3 + 1)."""
    return [items[start:start + 3] for start in range(0, len(items), 3)]


def _permute_within(tokens: List[str], groups: List[List[int]], rng) -> List[str]:
    """`tokens` with each group's tokens shuffled among that group's positions."""
    shuffled = list(tokens)
    for positions in groups:
        moved = [tokens[i] for i in positions]
        rng.shuffle(moved)
        for i, token in zip(positions, moved):
            shuffled[i] = token
    return shuffled


def _shuffle_plan(order_type: str, tokens: List[str], tags: List[str]):
    """(a function of rng giving one shuffle, whether a shuffle can differ at all)."""
    noun_positions = [i for i, tag in enumerate(tags) if tag == "NOUN"]
    adj_positions = [i for i, tag in enumerate(tags) if tag == "ADJ"]
    chunks = _trigrams(tokens)
    if order_type == "shuffle_nouns_adjs":
        groups = [noun_positions, adj_positions]
    elif order_type == "shuffle_allbut_nouns_adjs":
        groups = [[i for i, tag in enumerate(tags) if tag not in NOUN_ADJ]]
    elif order_type == "shuffle_within_trigrams":
        groups = _trigrams(list(range(len(tokens))))
    else:  # shuffle_trigrams
        def draw(rng):
            order = list(chunks)
            rng.shuffle(order)
            return [token for chunk in order for token in chunk]
        return draw, len({tuple(chunk) for chunk in chunks}) > 1
    can_differ = any(len({tokens[i] for i in positions}) > 1 for positions in groups)
    return (lambda rng: _permute_within(tokens, groups, rng)), can_differ


def order_shuffles(tokens: List[str], tags: List[str], rng, redraws: int) -> Tuple[List[Dict[str, str]], List[str]]:
    """ARO's four COCO-Order shuffles of one normalised caption's tokens, as ({"text",
    "order_type"} list, dropped types). A shuffle equal to the original is drawn again,
    up to `redraws` draws in all, then dropped; one that can never differ (a single noun
    and a single adjective, ...) is dropped without a draw."""
    shuffles, dropped = [], []
    for order_type in ORDER_TYPES:
        draw, can_differ = _shuffle_plan(order_type, tokens, tags)
        shuffled = None
        for _attempt in range(redraws if can_differ else 0):
            candidate = draw(rng)
            if candidate != tokens:
                shuffled = candidate
                break
        if shuffled is None:
            dropped.append(order_type)
        else:
            shuffles.append({"text": " ".join(shuffled), "order_type": order_type})
    return shuffles, dropped


# --- swaps that keep every word --------------------------------------------------------

class NounPhrase(NamedTuple):
    """Token positions of a noun phrase: [start, adjectives) determiner, number or
    possessive; [adjectives, nouns) adjectives; [nouns, end) the noun run, head last."""
    start: int
    adjectives: int
    nouns: int
    end: int


def noun_phrases(words: List[str], tags: List[str]) -> List[NounPhrase]:
    """Each maximal noun run with the adjectives and the one determiner, number or
    possessive straight before it."""
    phrases, position = [], 0
    while position < len(tags):
        if tags[position] != "NOUN":
            position += 1
            continue
        end = position
        while end < len(tags) and tags[end] == "NOUN":
            end += 1
        adjectives = position
        while adjectives > 0 and tags[adjectives - 1] == "ADJ":
            adjectives -= 1
        start = adjectives
        if start > 0 and (tags[start - 1] in ("DET", "NUM") or words[start - 1] in _POSSESSIVE):
            start -= 1
        phrases.append(NounPhrase(start, adjectives, position, end))
        position = end
    return phrases


def _front_case(front: str, away: str, first_word: str) -> Tuple[str, str]:
    """When a swap moves the caption's first word away, the text now in front takes the
    capital the first word had and the moved text loses it (TV and the like keep theirs)."""
    if not first_word[:1].isupper():
        return front, away
    moved_word = away.split()[0] if away.split() else away
    if not (len(moved_word) > 1 and moved_word.isupper()):
        away = with_first_letter(away, False)
    return with_first_letter(front, True), away


class TaggedCaption(NamedTuple):
    """A caption stripped of surrounding white space, its tokens with their character
    spans, the tokens in lower case and their tags."""
    text: str
    spans: List[Tuple[str, int, int]]
    lowered: List[str]
    tags: List[str]

    def chars(self, first: int, stop: int) -> Tuple[int, int]:
        """The character span of tokens first..stop-1."""
        return self.spans[first][1], self.spans[stop - 1][2]


def tag_caption(caption: str, tagger) -> TaggedCaption:
    """The caption, stripped, tokenised and tagged by `tagger` (lower-case tokens in)."""
    text = caption.strip()
    spans = caption_tokens(text)
    lowered = [token.lower() for token, _start, _end in spans]
    return TaggedCaption(text, spans, lowered, tagger(lowered))


def _keeps_words(lowered: List[str], after_text: str) -> bool:
    """Whether `after_text` has exactly the words `lowered` lists, in any order."""
    return sorted(lowered) == sorted(t.lower() for t, _s, _e in caption_tokens(after_text))


def attribute_swap(caption: TaggedCaption) -> Optional[str]:
    """`a black cat and a white dog` -> `a white cat and a black dog`: the adjectives of
    the caption's two described objects trade places (a/an follow). None unless exactly
    two noun phrases carry adjectives, their nouns differ, their adjectives differ, no
    adjective quantifies (several, other, ...), and no adjective is coordinated
    (`black and white`)."""
    text, spans, lowered, tags = caption
    described = [p for p in noun_phrases(lowered, tags) if p.adjectives < p.nouns]
    if len(described) != 2:
        return None
    first, second = described
    adjectives = [lowered[p.adjectives:p.nouns] for p in described]
    nouns = [lowered[p.nouns:p.end] for p in described]
    if adjectives[0] == adjectives[1] or nouns[0] == nouns[1]:
        return None
    if any(word in NON_ATTRIBUTE_ADJECTIVES for run in adjectives for word in run):
        return None
    for phrase in described:  # "a black and white cat": the run's left neighbour is a conjoined adjective
        left = phrase.adjectives - (phrase.start < phrase.adjectives)
        if left >= 2 and tags[left - 1] == "CCONJ" and tags[left - 2] == "ADJ":
            return None
    (s1, e1), (s2, e2) = caption.chars(first.adjectives, first.nouns), caption.chars(second.adjectives, second.nouns)
    new_first, new_second = text[s2:e2], text[s1:e1]
    if s1 == 0:
        new_first, new_second = _front_case(new_first, new_second, spans[0][0])
    replacements = [(s1, e1, new_first), (s2, e2, new_second)]
    for phrase, new_run in [(first, new_first), (second, new_second)]:
        if phrase.start < phrase.adjectives and lowered[phrase.start] in ("a", "an"):
            _word, start, end = spans[phrase.start]
            article = indefinite_article(new_run.split()[0].lower())
            replacements.append((start, end, with_first_letter(article, text[start].isupper())))
    swapped = apply_edits(text, replacements)
    return swapped if swapped != text and _keeps_words(lowered, swapped) else None


def _singular(noun: str) -> bool:
    return noun.endswith("ss") or not noun.endswith("s") or noun in ("bus", "glass", "grass")


def relation_swap(caption: TaggedCaption) -> Optional[str]:
    """`a man riding a horse` -> `a horse riding a man`: the caption's subject (its
    first noun phrase, at the start) and the object right after the relation trade
    places. The relation is a verb, a preposition, or both (`is sitting on`), never a
    symmetric one (with, next to, near, and, ...) or `of`. None unless the pattern
    holds, the two nouns differ, the object phrase ends there (no `of`, conjunction or
    verb after it: `a man in a shirt throwing a ball` is not a relation of man and
    shirt), and, where a finite verb must agree, both are singular or both plural."""
    text, spans, lowered, tags = caption
    phrases = noun_phrases(lowered, tags)
    if len(phrases) < 2 or phrases[0].start != 0:
        return None
    subject, obj = phrases[0], phrases[1]
    middle = list(range(subject.end, obj.start))
    if not middle or any(tags[i] not in ("AUX", "VERB", "ADP", "ADV") for i in middle):
        return None
    if not any(tags[i] in ("VERB", "ADP") for i in middle) or any(lowered[i] in SYMMETRIC_RELATION_WORDS for i in middle):
        return None
    if obj.end < len(lowered) and (lowered[obj.end] == "of" or tags[obj.end] in ("CCONJ", "VERB")):
        return None  # the object goes on (a plate of food; a shirt and jeans; a man in a shirt throwing ...)
    subject_head, object_head = lowered[subject.end - 1], lowered[obj.end - 1]
    if lowered[subject.nouns:subject.end] == lowered[obj.nouns:obj.end]:
        return None
    finite = any(tags[i] == "AUX" or (tags[i] == "VERB" and not lowered[i].endswith("ing")) for i in middle)
    if finite and _singular(subject_head) != _singular(object_head):
        return None
    (s1, e1), (s2, e2) = caption.chars(subject.start, subject.end), caption.chars(obj.start, obj.end)
    object_text, subject_text = _front_case(text[s2:e2], text[s1:e1], spans[0][0])
    swapped = apply_edits(text, [(s1, e1, object_text), (s2, e2, subject_text)])
    return swapped if swapped != text and _keeps_words(lowered, swapped) else None


def compositional_swaps(caption: str, tagger) -> List[Dict[str, str]]:
    """The caption's swaps as {"text", "swap_type"} (attribute, then relation)."""
    tagged = tag_caption(caption, tagger)
    found = [(attribute_swap(tagged), "attribute"), (relation_swap(tagged), "relation")]
    return [{"text": text, "swap_type": swap_type} for text, swap_type in found if text is not None]


def print_compositional_summary(counts: Counter, output_path: str, seconds: float) -> None:
    """The compositional generator's summary, in the style of `print_summary`."""
    captions = counts["captions"] or 1
    print(f"records:               {counts['records']}")
    print(f"captions:              {counts['captions']}")
    kept = ", ".join(f"{t} {counts['order_' + t]}" for t in ORDER_TYPES)
    print(f"order shuffles:        {sum(counts['order_' + t] for t in ORDER_TYPES)} ({kept})")
    dropped = ", ".join(f"{t} {counts['order_dropped_' + t]}" for t in ORDER_TYPES)
    print(f"shuffles dropped:      {sum(counts['order_dropped_' + t] for t in ORDER_TYPES)} "
          f"(no shuffle differs from the caption: {dropped})")
    print(f"captions cut to {ORDER_MAX_WORDS} words: {counts['order_truncated']}")
    for swap_type in SWAP_TYPES:
        with_swap = counts[f"captions_with_{swap_type}_swap"]
        print(f"{swap_type + ' swaps:':<22} {with_swap} (coverage: {with_swap / captions:.1%} of captions)")
    print(f"captions with a swap:  {counts['captions_with_swap']} ({counts['captions_with_swap'] / captions:.1%})")
    print(f"wrote {output_path} in {seconds:.1f} s")
