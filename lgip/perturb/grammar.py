"""The English the v2 rules rest on: words and their positions in a caption, phrase
tables, case, COCO's object nouns in both numbers, numbers, noun phrases and their
heads, a/an and subject-verb agreement. v2's flips and paraphrases (v2.py) are written
with these helpers.

inflect writes noun forms (plural, singular) and a/an; lemminflect's dictionary says
what a word can be (noun, adjective, verb) and writes verb forms (participles). Both
are imported on first use: the paper rules never need them, and inflect takes seconds.
"""
from __future__ import annotations

import functools
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

from lgip.perturb.paper import COLORS

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
# Forms of be and have, singular -> plural. These and any other present-tense verb right
# after a noun phrase (`sits` <-> `sit`), or between `there` and it, agree with it.
AGREEING_VERBS = {"is": "are", "was": "were", "has": "have"}

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

# A word: letters and digits, with hyphens and apostrophes inside or an apostrophe after,
# so "red-and-white", "two-story", "dog's" and "dogs'" are one word each and never flip.
_WORD_V2 = re.compile(r"\w+(?:['’-]\w+)*['’]?")

# Derived from the tables above.
FUNCTION_WORD_SET = frozenset(FUNCTION_WORDS)
COLOR_CANONICAL = {**{color: color for color in COLORS_V2}, **COLOR_SPELLINGS}
PLURAL_VERBS = {plural: singular for singular, plural in AGREEING_VERBS.items()}


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
    if word in FUNCTION_WORD_SET or number_value(word) is not None:
        return "function"
    entry = dictionary_entry(word)
    if word in COLOR_CANONICAL or "ADJ" in entry or ("VERB" in entry and word.endswith(("ing", "ed"))):
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
        return after is not None and after.lower in COLOR_CANONICAL
    return following.lower in COLOR_CANONICAL or noun_at(words, index + 1) is not None


def object_at(words: List[Word], index: int) -> Optional[Noun]:
    """The COCO object whose name (longest first: `hot dog`, not `hot`) starts at
    words[index], else None (also for `orange` used as a colour)."""
    found = phrase_at(words, index, object_nouns())
    if found is None or (words[index].lower in COLOR_CANONICAL and is_color_use(words, index)):
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
                          and word not in COLOR_CANONICAL):
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
    if word in AGREEING_VERBS or word in PLURAL_VERBS:
        singular = PLURAL_VERBS.get(word, word)
        return AGREEING_VERBS[singular] if plural else singular
    lemma = None if word in FUNCTION_WORD_SET else verb_lemma(word, "VBZ") or verb_lemma(word, "VBP")
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
