"""Tokens and part-of-speech tags for the compositional probes: ARO's COCO-Order
normalisation of a caption, and two taggers with one signature (lower-case tokens in,
universal tags out): `tag_lexicon`, offline (the lexicon `lemminflect` ships on PyPI,
plus context rules; nothing downloaded), and, with `--tagger spacy`, spaCy's
en_core_web_sm, which ARO used.
"""
from __future__ import annotations

import functools
import re
from typing import Callable, List, Optional, Tuple

from lgip.io import InputError
from lgip.perturb.grammar import dictionary_entry
from lgip.perturb.paper import COLORS

ORDER_PUNCTUATION = '.!"()*#:;~'  # ARO's pre_caption turns these into spaces
ORDER_MAX_WORDS = 30  # ARO's COCO-Order keeps the first 30 words
ORDER_NORMALISATION = ("ARO's COCO-Order pre_caption: lower case; the characters " + ORDER_PUNCTUATION
                       + " as spaces; split into words, other punctuation and 's as tokens of their own; the first "
                       + f"{ORDER_MAX_WORDS} tokens, joined by single spaces. Applied to the original (order_orig) "
                       + "and to every shuffle (order_caps) alike.")
TAGGERS = ("lexicon", "spacy")
SPACY_MODEL = "en_core_web_sm"

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
# Possessive determiners: they start a noun phrase, as "the" does.
POSSESSIVES = {"his", "her", "its", "their", "my", "your", "our"}
# Where the lexicon misleads: many/few/other only as nouns, top never as a noun, pan
# only as a verb. Colours are adjectives before a noun, whatever else the lexicon allows.
_EXTRA_CLASSES = {"many": {"ADJ"}, "few": {"ADJ"}, "other": {"ADJ"}, "top": {"NOUN", "ADJ"}, "pan": {"NOUN", "VERB"}}
_COLOUR_WORDS = set(COLORS) | {"grey", "silver", "golden", "gold", "tan", "beige", "maroon", "navy", "teal", "violet",
                               "turquoise", "blond", "blonde", "colorful", "colourful"}


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
    return position >= 0 and (tags[position] in ("DET", "NUM") or words[position] in POSSESSIVES)


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
        if previous is None or previous in ("DET", "NUM", "ADJ", "ADP", "PUNCT", "PART") or words[position - 1] in POSSESSIVES:
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
