"""Rules v2 (`--rules v2`): a rule set a linguist would sign. The paper's rules
(paper.py) stay the default and reproduce the release. v2 matches whole words
case-insensitively and writes each replacement in the capitalisation of the word it
replaces; flips keep the caption grammatical (number, a/an, is/are) and never flip into
something the caption already mentions; paraphrases keep the sentence well formed and
its meaning. A flip is a site finder, which returns the options in table order, and a
rewrite, which takes the chosen option: the one random draw, `rng.choice(site.options)`,
is separable, and the rest can be checked by hand. The English underneath (word forms,
noun phrases, agreement) is grammar.py's; docs/rules_v2.md explains every rule.
"""
from __future__ import annotations

import functools
import re
from typing import List, NamedTuple, Optional, Tuple

from lgip.perturb.grammar import (AGREEING_VERBS, COLOR_CANONICAL, COLORS_V2, FUNCTION_WORD_SET, INDEFINITE_ARTICLES,
                                  MAX_NOUN_PHRASE_WORDS, NUMBER_WORDS_V2, PLURAL_VERBS, Noun, PhraseTable, Word,
                                  apply_edits, article_agreement, category_forms, copy_case, count_of,
                                  countable_categories, is_color_use, keep_initial_capital, next_word, noun_at,
                                  noun_phrase_head, number_value, object_at, object_nouns, phrase_matches, plural_of,
                                  present_tense, previous_word, singular_of, split_words, verb_agreement,
                                  verb_inflection, verb_lemma, with_first_letter, word_kind)
from lgip.perturb.paper import MIN_TEXT_CHARS, PREFIXES, TEMPLATES, unique_keep_first

# Words after a counted noun that refer back to its number (`two dogs playing together`,
# `a man holding his phone`): a number flip there keeps the noun's number (two -> three).
NUMBER_BOUND_WORDS = ["its", "his", "her", "their", "itself", "himself", "herself", "themselves", "each other",
                      "one another", "together", "both"]
# Words before a noun that make it singular (for `sheep`, whose two numbers look alike).
SINGULAR_DETERMINERS = ["a", "an", "one", "1", "this", "that", "each", "every", "another"]
# Words after which `is`, `has`, ... belong to a relative clause, not to the caption's sentence.
RELATIVE_PRONOUNS = ["that", "which", "who", "where"]
# Pronouns that can be a caption's subject (`someone stands next to a dog`).
SUBJECT_PRONOUNS = ["i", "you", "he", "she", "it", "we", "they", "someone", "somebody", "something", "everyone",
                    "everybody", "nobody"]

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

_NUMBER_BOUND_WORDS = PhraseTable(dict.fromkeys(NUMBER_BOUND_WORDS))


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


def color_site(words: List[Word]) -> Optional[ColorSite]:
    """The leftmost colour word used as a colour; its options are the colours (COLORS_V2
    order) that the caption does not mention in any spelling."""
    mentioned = [COLOR_CANONICAL[word.lower] for word in words if word.lower in COLOR_CANONICAL]
    for index, word in enumerate(words):
        if word.lower in COLOR_CANONICAL and is_color_use(words, index):
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
        if (word.lower in AGREEING_VERBS or word.lower in PLURAL_VERBS) and (
                index == 0 or words[index - 1].lower not in RELATIVE_PRONOUNS):
            return True
    if not words:
        return False
    if words[0].lower in SUBJECT_PRONOUNS:
        subjects = [(0, False), (0, True)]  # (index of the subject's last word, plural)
    else:
        count = count_of(words[0].lower)
        start = 1 if count is not None or words[0].lower in FUNCTION_WORD_SET else 0
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
    return [(text, kind) for text, kind in unique_keep_first(items)
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
