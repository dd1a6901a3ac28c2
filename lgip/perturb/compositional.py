"""The compositional probes (make_compositional_perturb.py): every word stays, only
order or binding changes. Word-order shuffles as ARO's COCO-Order makes them
(Yuksekgonul et al., 2023), and meaning-changing swaps of attributes between two objects
or of the subject and object of a relation; the tokens and tags come from tagger.py.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, NamedTuple, Optional, Tuple

from lgip.perturb.grammar import apply_edits, indefinite_article, with_first_letter
from lgip.perturb.tagger import ORDER_MAX_WORDS, POSSESSIVES, caption_tokens

ORDER_TYPES = ["shuffle_nouns_adjs", "shuffle_allbut_nouns_adjs", "shuffle_within_trigrams", "shuffle_trigrams"]
SWAP_TYPES = ["attribute", "relation"]
NOUN_ADJ = ("NOUN", "ADJ")

# Swaps: adjectives that quantify or order rather than describe, relations that read the
# same both ways, and words that make a swap unsafe.
NON_ATTRIBUTE_ADJECTIVES = {"several", "many", "few", "other", "same", "next", "own", "various", "different", "more",
                            "most", "much", "such", "last", "first", "second", "third", "only", "single", "each",
                            "both", "whole", "entire", "numerous", "multiple"}
SYMMETRIC_RELATION_WORDS = {"and", "or", "with", "near", "beside", "by", "next", "alongside", "among", "between",
                            "together", "opposite", "of", "like", "meeting", "hugging", "kissing", "talking",
                            "chatting", "fighting", "playing"}


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
        if start > 0 and (tags[start - 1] in ("DET", "NUM") or words[start - 1] in POSSESSIVES):
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
    """The compositional generator's summary, in the style of `generator.print_summary`."""
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
