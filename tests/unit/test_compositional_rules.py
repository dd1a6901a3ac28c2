"""Compositional probes' rules: ARO-style word-order shuffles and word-keeping swaps on
hand-worked captions, the offline tagger against hand tags, and run_compositional.py's
pairing of items by caption. The generator and the evaluation run as scripts in
tests/scripts/test_compositional_scripts.py."""
import random
import sys
import types
from collections import Counter

import numpy as np
import pytest

import run_compositional
from lgip.io import InputError
from lgip.perturb.compositional import (ORDER_TYPES, attribute_swap, compositional_swaps, order_shuffles,
                                        relation_swap, tag_caption)
from lgip.perturb.tagger import make_tagger, normalise_caption, tag_lexicon
from tests.helpers import DATA, word_counts

# --- normalisation and shuffles -------------------------------------------------------

def test_normalisation_is_aros_and_cuts_at_thirty_tokens():
    assert normalise_caption(' A man, riding a "horse" (on) the beach!!\n') == "a man , riding a horse on the beach"
    assert normalise_caption("A dog's toy: red; ~new~ #1*") == "a dog 's toy red new 1"
    long_caption = " ".join(f"w{i}" for i in range(35)) + "."
    assert normalise_caption(long_caption).split(" ") == [f"w{i}" for i in range(30)]


SENTENCE = "a black cat sees a white dog".split()  # 7 tokens: chunks 3 + 3 + 1
HAND_TAGS = ["DET", "ADJ", "NOUN", "VERB", "DET", "ADJ", "NOUN"]


def test_hand_worked_shuffles_under_a_fixed_seed():
    assert tag_lexicon(SENTENCE) == HAND_TAGS
    shuffles, dropped = order_shuffles(SENTENCE, HAND_TAGS, random.Random(0), 10)
    assert dropped == []
    by_type = {item["order_type"]: item["text"].split(" ") for item in shuffles}
    assert list(by_type) == ORDER_TYPES
    for tokens in by_type.values():
        assert Counter(tokens) == Counter(SENTENCE) and tokens != SENTENCE
    nouns_adjs = by_type["shuffle_nouns_adjs"]
    assert [nouns_adjs[i] for i in (0, 3, 4)] == ["a", "sees", "a"]  # only noun and adjective positions move
    assert {nouns_adjs[1], nouns_adjs[5]} == {"black", "white"} and {nouns_adjs[2], nouns_adjs[6]} == {"cat", "dog"}
    allbut = by_type["shuffle_allbut_nouns_adjs"]
    assert [allbut[i] for i in (1, 2, 5, 6)] == ["black", "cat", "white", "dog"]  # nouns and adjectives stay
    within = by_type["shuffle_within_trigrams"]
    assert [sorted(within[0:3]), sorted(within[3:6]), within[6:]] == [sorted(SENTENCE[0:3]), sorted(SENTENCE[3:6]), ["dog"]]
    chunks = [tuple(SENTENCE[0:3]), tuple(SENTENCE[3:6]), ("dog",)]
    moved = by_type["shuffle_trigrams"]
    assert any([token for chunk in order for token in chunk] == moved
               for order in [(chunks[i], chunks[j], chunks[k]) for i in range(3) for j in range(3) for k in range(3)
                             if len({i, j, k}) == 3])
    assert [item["text"] for item in shuffles] == [  # seed 0, pinned
        "a black dog sees a white cat", "a black cat a sees white dog", "a cat black a sees white dog",
        "sees a white a black cat dog"]


class IdentityShuffle:
    """A stand-in for random.Random whose shuffle leaves everything in place."""

    def __init__(self):
        self.calls = 0

    def shuffle(self, items):
        self.calls += 1


def test_a_shuffle_equal_to_the_original_is_redrawn_then_dropped():
    rng = IdentityShuffle()
    shuffles, dropped = order_shuffles(SENTENCE, HAND_TAGS, rng, redraws=4)
    assert shuffles == [] and dropped == ORDER_TYPES
    assert rng.calls == 4 * 2 + 4 + 4 * 3 + 4  # nouns+adjectives: 2 shuffles a draw; within trigrams: 3 chunks a draw


def test_a_shuffle_that_cannot_differ_is_dropped_without_a_draw():
    # one noun, no adjective; the other words both "the"; a single chunk: only the
    # within-chunk shuffle can differ, and only it draws
    rng = IdentityShuffle()
    shuffles, dropped = order_shuffles(["the", "dog", "the"], ["DET", "NOUN", "DET"], rng, 10)
    assert shuffles == [] and dropped == ORDER_TYPES and rng.calls == 10
    shuffles, dropped = order_shuffles(["the", "dog", "the"], ["DET", "NOUN", "DET"], random.Random(5), 10)
    assert [item["order_type"] for item in shuffles] == ["shuffle_within_trigrams"]
    assert dropped == ["shuffle_nouns_adjs", "shuffle_allbut_nouns_adjs", "shuffle_trigrams"]


# --- the tagger against hand tags -----------------------------------------------------

def read_gold():
    rows = []
    for line in (DATA / "pos_gold.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            caption, tagged = line.split("\t")
            rows.append((caption, [item.rsplit("/", 1) for item in tagged.split(" ")]))
    return rows


def coarse(tag):
    return "NOUN" if tag in ("NOUN", "PROPN") else "ADJ" if tag == "ADJ" else "other"


def test_lexicon_tagger_agrees_with_hand_tags_on_nouns_and_adjectives():
    gold_rows = read_gold()
    assert len(gold_rows) == 70  # 50, then 20 written after the rules were set
    gold, predicted = [], []
    for caption, tagged in gold_rows:
        tokens = normalise_caption(caption).split(" ")
        assert tokens == [token for token, _tag in tagged], caption
        gold += [coarse(tag) for _token, tag in tagged]
        predicted += [coarse(tag) for tag in tag_lexicon(tokens)]
    gold, predicted = np.array(gold), np.array(predicted)
    accuracy = float((gold == predicted).mean())
    figures = {"accuracy": accuracy}
    for tag in ("NOUN", "ADJ"):
        figures[f"{tag} precision"] = float((gold[predicted == tag] == tag).mean())
        figures[f"{tag} recall"] = float((predicted[gold == tag] == tag).mean())
    print(f"\nlexicon tagger on {len(gold)} hand-tagged tokens (NOUN / ADJ / other): "
          + ", ".join(f"{name} {value:.3f}" for name, value in figures.items()))
    assert accuracy >= 0.95
    assert min(figures.values()) >= 0.9


def test_spacy_tagger_is_a_drop_in_with_a_clear_error_when_missing(monkeypatch):
    class Token:
        def __init__(self, tag, pos):
            self.tag_, self.pos_ = tag, pos

    class FakeNlp:
        vocab = object()

        def __call__(self, doc):
            return [Token(*{"cat": ("NN", "NOUN"), "black": ("JJ", "ADJ"), "Rome": ("NNP", "PROPN")}.get(w, ("DT", "DET")))
                    for w in doc]

    fake = types.ModuleType("spacy")
    fake.load = lambda name, exclude=(): FakeNlp()
    fake_tokens = types.ModuleType("spacy.tokens")
    fake_tokens.Doc = lambda vocab, words: words
    monkeypatch.setitem(sys.modules, "spacy", fake)
    monkeypatch.setitem(sys.modules, "spacy.tokens", fake_tokens)
    tagger = make_tagger("spacy")
    assert tagger(["a", "black", "cat", "Rome"]) == ["DET", "ADJ", "NOUN", "NOUN"]

    def missing(name, exclude=()):
        raise OSError(f"[E050] Can't find model '{name}'.")
    fake.load = missing
    with pytest.raises(InputError, match="en_core_web_sm could not be loaded"):
        make_tagger("spacy")


# --- swaps ------------------------------------------------------------------------------

@pytest.mark.parametrize("caption,expected", [
    ("A black cat and a white dog sleeping on a couch.", "A white cat and a black dog sleeping on a couch."),
    ("An orange cat and a black dog.", "A black cat and an orange dog."),  # a/an follow the adjective
    ("Black cat and white dog.", "White cat and black dog."),
    ("A large brown dog and a small white cat", "A small white dog and a large brown cat"),
    ("A man in a red shirt and blue jeans.", "A man in a blue shirt and red jeans."),
    ("A red car and a blue car.", None),  # same noun: the meaning does not change
    ("A big dog and a big cat.", None),  # same adjective
    ("A small dog on a couch.", None),  # one described object
    ("a black and white cat next to a red ball", None),  # coordinated adjectives: which one binds?
    ("Several large dogs and a small cat.", None),  # a quantifier
    ("An old man and the young woman.", None),  # an -> a would change the words
    ("A red car, a blue bus and a green truck.", None),  # three described objects
])
def test_attribute_swaps(caption, expected):
    assert attribute_swap(tag_caption(caption, tag_lexicon)) == expected


@pytest.mark.parametrize("caption,expected", [
    ("A man riding a horse.", "A horse riding a man."),
    ("The horse is eating the grass.", "The grass is eating the horse."),
    ("Two dogs chasing a ball.", "A ball chasing two dogs."),
    ("A cat sitting on a table.", "A table sitting on a cat."),
    ("a man holding an umbrella", "an umbrella holding a man"),
    ("A cat next to a dog.", None),  # symmetric relations
    ("A man with a dog.", None),
    ("A plate of food on a table.", None),  # of
    ("A man is riding two horses.", None),  # "two horses is riding" would not agree
    ("There is a man riding a horse.", None),  # the subject is not first
    ("A man in a blue shirt throwing a frisbee.", None),  # the object phrase goes on
    ("A dog chasing a dog.", None),
    ("A man's dog on a couch.", None),
])
def test_relation_swaps(caption, expected):
    assert relation_swap(tag_caption(caption, tag_lexicon)) == expected


def test_swaps_keep_every_word_and_are_typed():
    swaps = compositional_swaps("A black dog chasing a white cat.", tag_lexicon)
    assert swaps == [{"text": "A white dog chasing a black cat.", "swap_type": "attribute"},
                     {"text": "A white cat chasing a black dog.", "swap_type": "relation"}]
    for swap in swaps:
        assert word_counts(swap["text"]) == word_counts("A black dog chasing a white cat.")


# --- run_compositional.py's array helpers -----------------------------------------------

def test_caption_products_pairs_every_item_of_the_same_caption():
    captions_a, captions_b = np.array([2, 0, 2, 1]), np.array([0, 2, 2, 0, 2])
    left, right = run_compositional.caption_products(captions_a, np.arange(4) + 10, captions_b, np.arange(5) + 20, 3)
    expected = {(10 + a, 20 + b) for a in range(4) for b in range(5) if captions_a[a] == captions_b[b]}
    assert sorted(zip(left.tolist(), right.tolist())) == sorted(expected) and len(left) == len(expected)
