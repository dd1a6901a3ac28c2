"""The paper's rules (the release's flips and paraphrases) on hand-worked captions."""
import random

from lgip.perturb.paper import (enhanced_paraphrases, release_passive_paraphrases, release_synonym_paraphrases,
                                template_paraphrases, typed_flips)


class FirstChoice:
    """A stand-in for random.Random whose choice is always the first candidate, so a
    flip can be worked out by hand."""

    def choice(self, seq):
        return seq[0]


def test_colour_flip_replaces_only_the_leftmost_colour():
    assert typed_flips("a red and blue car", FirstChoice()) == [
        ("a blue and blue car", "color"),   # red -> first colour that is not red
        ("a red and blue dog", "object"),   # car -> dog
    ]


def test_capitalised_plural_and_embedded_words_are_not_flipped():
    # case-sensitive whole words: Dog, dogs, someone (contains "one"), redwood, bluebird stay
    for caption in ["Dog on a couch.", "two dogs", "someone in a redwood forest", "a bluebird"]:
        flips = dict((t, text) for text, t in typed_flips(caption, FirstChoice()))
        assert "object" not in flips and "color" not in flips
    assert typed_flips("two dogs", FirstChoice()) == [("one dogs", "number")]


def test_caption_without_list_words_has_no_flip_and_draws_nothing():
    rng = random.Random(3)
    state = rng.getstate()
    assert typed_flips("A man riding a wave on a surfboard.", rng) == []
    assert rng.getstate() == state


def test_paraphrases_fill_the_caption_as_stored_then_strip():
    caption = " A man riding a horse.\n"
    texts = [text for text, _ in template_paraphrases(caption)]
    assert texts[0] == "a photo of  A man riding a horse."        # inner double space kept, as the release
    assert "A man riding a horse.\n in the scene" in texts          # inner newline kept
    assert "A man riding a horse." in texts                         # the {} template; generators drop it
    assert len(texts) == 9


def test_short_results_are_dropped():
    texts = [text for text, _ in template_paraphrases("dog")]
    assert "dog" not in texts and "a photo of dog" in texts
    assert typed_flips("cat", FirstChoice()) == []  # "dog" has 3 characters


def test_release_passive_and_synonyms():
    assert release_passive_paraphrases("A cat sits on a mat.") == ["A a mat sits on cat."]
    assert release_passive_paraphrases("A train is going down the tracks.") == ["The tracks is going train down them."]
    synonyms = release_synonym_paraphrases("A small dog")
    assert synonyms[:3] == ["A little dog", "A tiny dog", "A miniature dog"]
    assert "A tiny hound" in synonyms and len(synonyms) == 3 + 3 + 9


def test_enhanced_paraphrases_are_labelled_and_in_first_seen_order():
    items = enhanced_paraphrases("A cat sits on a mat.")
    kinds = [kind for _, kind in items]
    assert kinds == sorted(kinds, key=["template", "prefix", "passive", "synonym"].index)
    assert ("A a mat sits on cat.", "passive") in items
    assert ("A feline sits on a mat.", "synonym") in items
    assert all(text.lower() != "a cat sits on a mat." for text, _ in items)
