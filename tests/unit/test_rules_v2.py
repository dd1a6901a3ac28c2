"""The v2 rules (`--rules v2`): a hand-worked table of tricky captions with the exact
expected flips and paraphrases, and the helpers they rest on. Whole-file runs of the
generators with v2 are in tests/scripts/test_rules_v2_files.py."""
import random

import pytest

from lgip.perturb.grammar import (COCO_CATEGORIES, COLORS_V2, category_forms, copy_case, indefinite_article,
                                  object_nouns, split_words)
from lgip.perturb.paper import RELEASE_SYNONYMS
from lgip.perturb.rules import RULE_SETS
from lgip.perturb.v2 import (color_site, enhanced_paraphrases_v2, flip_v2, mid_sentence, number_site, object_site,
                             passive_paraphrases_v2, synonym_paraphrases_v2, template_paraphrases_v2, tidy)

V2 = RULE_SETS["v2"]


class Pick:
    """A stand-in for random.Random whose choice returns `item`, which must be one of the
    options the rule offers: the expected output can then be worked out by hand."""

    def __init__(self, item):
        self.item = item

    def choice(self, options):
        assert self.item in options, f"{self.item!r} is not among the options {options}"
        return self.item


class NoDraw:
    """A stand-in for random.Random that fails if a rule draws at all."""

    def choice(self, options):
        raise AssertionError(f"drew from {options} where no flip was expected")


# (caption, flip type, the option picked, expected flip; None: no flip and no draw)
FLIP_CASES = [
    # whole words, any case; the replacement copies the original's capitals
    ("Dog on a couch.", "object", "cat", "Cat on a couch."),
    ("DOG ON A COUCH", "object", "cat", "CAT ON A COUCH"),
    ("A RED CAR", "color", "blue", "A BLUE CAR"),
    ("Red car parked outside", "color", "green", "Green car parked outside"),
    ("TV on a stand", "object", "laptop", "Laptop on a stand"),
    ("a dog on a bed", "object", "tv", "a TV on a bed"),
    # objects: 80 categories, multi-word names, plurals (irregular too), number kept
    ("Two dogs playing in the grass", "object", "cat", "Two cats playing in the grass"),
    ("a fire hydrant on a sidewalk", "object", "teddy bear", "a teddy bear on a sidewalk"),
    ("a hot dog on a plate", "object", "pizza", "a pizza on a plate"),
    ("buses parked on the street", "object", "truck", "trucks parked on the street"),
    ("people walking on a beach", "object", "dog", "dogs walking on a beach"),
    ("a person walking a dog", "object", "horse", "a horse walking a dog"),
    ("knives on a table", "object", "fork", "forks on a table"),
    ("mice on a desk", "object", "keyboard", "keyboards on a desk"),
    ("A man holding a cell phone", "object", "remote", "A man holding a remote"),
    ("a doughnut on a plate", "object", "cake", "a cake on a plate"),
    ("a pair of skis", "object", "snowboard", "a pair of snowboards"),
    ("A sheep grazing", "object", "cow", "A cow grazing"),
    ("sheep grazing in a field", "object", "cow", "cows grazing in a field"),
    ("broccoli is on the plate", "object", "carrot", "carrots are on the plate"),
    ("someone holding an umbrella", "object", "kite", "someone holding a kite"),
    # a/an agree after any flip
    ("an apple next to a banana", "object", "cake", "a cake next to a banana"),
    ("a dog in a field", "object", "elephant", "an elephant in a field"),
    ("a red apple", "color", "orange", "an orange apple"),
    ("an orange cat on a bed", "color", "red", "a red cat on a bed"),
    # colours: the release's and more, never one the caption has
    ("A red and blue car", "color", "green", "A green and blue car"),
    ("a grey cat next to a gray dog", "color", "white", "a white cat next to a gray dog"),
    ("a silver car", "color", "gold", "a gold car"),
    ("a tan dog", "color", "beige", "a beige dog"),
    ("an orange and white cat", "color", "black", "a black and white cat"),
    ("an orange on a table", "color", None, None),  # the fruit
    ("an orange on a table", "object", "apple", "an apple on a table"),
    # numbers: words and digits; the noun (after adjectives) and is/are and other verbs agree
    ("one dog sitting on a bench", "number", "three", "three dogs sitting on a bench"),
    ("two cats are sleeping", "number", "one", "one cat is sleeping"),
    ("Two small dogs play in the park", "number", "one", "One small dog plays in the park"),
    ("Three people standing in line", "number", "one", "One person standing in line"),
    ("2 giraffes standing", "number", "1", "1 giraffe standing"),
    ("One bus stop near a road", "number", "two", "Two bus stops near a road"),
    ("There is a dog on the couch.", "number", "two", "There are two dogs on the couch."),
    ("a dog sitting on the grass", "number", "two", "two dogs sitting on the grass"),
    ("A man riding a horse.", "number", "three", "A man riding three horses."),
    ("an orange cat on a bed", "number", "two", "two orange cats on a bed"),
    ("A hot dog with mustard", "number", "two", "Two hot dogs with mustard"),
    ("A sheep grazing", "number", "four", "Four sheep grazing"),
    ("Two giraffes standing next to each other", "number", "three", "Three giraffes standing next to each other"),
    ("A woman holding her umbrella and two cups", "number", "one", "A woman holding her umbrella and one cup"),
    ("one of the dogs", "number", None, None),
    ("the 10:30 train", "number", None, None),
    ("a man with a beard", "number", None, None),  # a/an count only known objects
    # words that must not flip
    ("someone in a redwood forest", "number", None, None),
    ("someone in a redwood forest", "color", None, None),
    ("someone in a redwood forest", "object", None, None),
    ("a bluebird on a branch", "color", None, None),
    ("a bluebird on a branch", "object", None, None),
    ("A red-and-white sign", "color", None, None),
    ("a two-story house", "number", None, None),
]


@pytest.mark.parametrize("caption, flip_type, picked, expected", FLIP_CASES)
def test_flip_table(caption, flip_type, picked, expected):
    rng = NoDraw() if expected is None else Pick(picked)
    assert flip_v2(caption, flip_type, rng) == expected


def test_the_table_covers_enough_captions():
    assert len({caption for caption, *_ in FLIP_CASES}) >= 40


def test_options_exclude_what_the_caption_mentions():
    words = split_words("A red and blue car near a grey dog")
    assert color_site(words).options == [c for c in COLORS_V2 if c not in ("red", "blue", "gray")]
    site = object_site(split_words("a dog chasing a cat"))
    assert "dog" not in site.options and "cat" not in site.options
    assert "scissors" not in site.options and "broccoli" not in site.options  # no countable singular
    assert number_site(split_words("a dog")).options == ["two", "three", "four", "five", "six", "seven", "eight",
                                                           "nine", "ten"]                 # never "one" for "a"
    assert "one" not in number_site(split_words("two dogs next to each other")).options


def test_hot_dog_is_one_object_and_never_a_hot_cat():
    site = object_site(split_words("a hot dog on a plate"))
    assert "hot dog" not in site.options and "dog" in site.options
    for category in site.options:
        assert " hot " not in flip_v2("a hot dog on a plate", "object", Pick(category))


def test_flips_draw_once_per_site_and_not_at_all_without_one():
    rng = random.Random(5)
    state = rng.getstate()
    assert V2.typed_flips("A man riding a wave on a surfboard.", rng) != []
    assert rng.getstate() != state
    state = rng.getstate()
    assert V2.typed_flips("someone in a redwood forest", rng) == []
    assert rng.getstate() == state


def test_release_failures_are_fixed():
    # "a photo of A man ...", "Two dogs" / "Dog" never flipped, "one dog" -> "five dog", "a orange cat"
    assert ("A photo of a man riding a horse.", "template") in template_paraphrases_v2("A man riding a horse.")
    assert flip_v2("Two dogs", "object", Pick("cat")) == "Two cats"
    assert flip_v2("Dog on a couch", "object", Pick("cat")) == "Cat on a couch"
    assert flip_v2("one dog", "number", Pick("five")) == "five dogs"
    assert flip_v2("a red cat", "color", Pick("orange")) == "an orange cat"
    # synonyms that changed the meaning and the passive that swapped subject and object
    assert "A woman sits on a mat." not in synonym_paraphrases_v2("A person sits on a mat.")
    assert synonym_paraphrases_v2("A blue car") == []
    assert passive_paraphrases_v2("A cat sits on a mat.") == []


# --- paraphrases ------------------------------------------------------------------

def test_templates_lower_case_the_caption_and_move_its_full_stop():
    assert template_paraphrases_v2("A man riding a horse.") == [
        ("A photo of a man riding a horse.", "template"),
        ("An image of a man riding a horse.", "template"),
        ("A picture of a man riding a horse.", "template"),
        ("A man riding a horse in the scene.", "template"),
        ("A scene showing a man riding a horse.", "template"),
        ("In this image, a man riding a horse.", "prefix"),
        ("In the picture, a man riding a horse.", "prefix"),
        ("This image shows a man riding a horse.", "prefix"),
    ]


@pytest.mark.parametrize("caption, expected", [
    ("A dog on a couch", "In this image, a dog on a couch"),
    ("DOG on a couch", "In this image, DOG on a couch"),                 # all capitals: kept
    ("TV on a stand.", "In this image, TV on a stand."),
    ("McDonald's sign at night", "In this image, McDonald's sign at night"),  # a capital inside: a name
    ("I see a dog", "In this image, I see a dog"),
    (" a man riding a horse .\n", "in this image, a man riding a horse."),  # tidied; lower case stays lower
])
def test_template_first_letter_heuristic(caption, expected):
    assert (expected, "prefix") in template_paraphrases_v2(caption)


def test_a_sentence_takes_only_the_templates_that_fit_it():
    assert [text for text, _ in template_paraphrases_v2("A man is riding a horse.")] == [
        "A man is riding a horse in the scene.", "In this image, a man is riding a horse.",
        "In the picture, a man is riding a horse."]
    assert len(template_paraphrases_v2("There is a dog on the couch.")) == 3
    assert len(template_paraphrases_v2("someone stands next to a dog.")) == 3
    assert len(template_paraphrases_v2("A dog that is asleep on a couch.")) == 8  # a relative clause: a noun phrase


@pytest.mark.parametrize("caption, expected", [
    ("A man is riding a horse.", ["A horse is being ridden by a man."]),
    ("A man riding a horse on the beach", ["A horse being ridden by a man on the beach"]),
    ("A woman rides a bicycle.", ["A bicycle is ridden by a woman."]),
    ("Two boys are throwing a frisbee.", ["A frisbee is being thrown by two boys."]),
    ("A man is holding two umbrellas.", ["Two umbrellas are being held by a man."]),
    ("The man is flying a kite on the beach.", ["A kite is being flown by the man on the beach."]),
    ("A cat sits on a mat.", []),                    # no object
    ("A bus is going down the street.", []),         # not transitive
    ("A man with a hat is riding a horse.", []),     # the subject is more than a noun phrase
    ("A man riding a horse with a dog", []),         # "with" could attach to either
    ("A dog that is chasing a cat", []),
    ("A man is having a drink.", []),                # no English passive
])
def test_passive(caption, expected):
    assert passive_paraphrases_v2(caption) == expected


@pytest.mark.parametrize("caption, expected", [
    ("A small dog next to a large couch", ["A little dog next to a large couch", "A small dog beside a large couch",
                                           "A small dog next to a big couch", "A small dog next to a large sofa"]),
    ("Two couches in a room", ["Two sofas in a room"]),
    ("An airplane on the runway", ["A plane on the runway"]),
    ("A person is walking", ["An individual is walking"]),
    ("People on a bus", ["Individuals on a bus"]),
    ("TV on a stand", ["Television on a stand"]),
    ("A GREY CAT", ["A GRAY CAT"]),
    ("A red car", []),
])
def test_synonyms_keep_number_case_and_articles(caption, expected):
    assert synonym_paraphrases_v2(caption) == expected


def test_synonym_table_leaves_out_the_release_entries_that_change_meaning():
    for word in ["woman", "man", "navy", "azure", "crimson", "scarlet", "huge", "enormous", "puppy", "kitty"]:
        assert all(word not in text.lower().split() for text in synonym_paraphrases_v2(
            "A person with a large red cat and a blue dog"))
    assert set(RELEASE_SYNONYMS["person"]) & {"man", "woman"}  # the release had them


def test_enhanced_paraphrases_are_labelled_in_order():
    assert enhanced_paraphrases_v2("A man is riding a horse next to a car.") == [
        ("A man is riding a horse next to a car in the scene.", "template"),
        ("In this image, a man is riding a horse next to a car.", "prefix"),
        ("In the picture, a man is riding a horse next to a car.", "prefix"),
        ("A horse is being ridden by a man next to a car.", "passive"),
        ("A man is riding a horse beside a car.", "synonym"),
    ]


# --- helpers ----------------------------------------------------------------------

def test_object_table():
    assert len(COCO_CATEGORIES) == 80 and len(set(COCO_CATEGORIES)) == 80
    nouns = object_nouns()
    for form, category, number in [("person", "person", "singular"), ("people", "person", "plural"),
                                   ("buses", "bus", "plural"), ("knives", "knife", "plural"),
                                   ("mice", "mouse", "plural"), ("ski", "skis", "singular"),
                                   ("skis", "skis", "plural"), ("sheep", "sheep", "both"),
                                   ("broccoli", "broccoli", "mass"), ("hot dogs", "hot dog", "plural"),
                                   ("doughnut", "donut", "singular"), ("wine glasses", "wine glass", "plural")]:
        assert (nouns[form].category, nouns[form].number) == (category, number), form
    assert category_forms("scissors") == (None, "scissors")


@pytest.mark.parametrize("original, replacement, expected", [
    ("dog", "cat", "cat"), ("Dog", "cat", "Cat"), ("DOG", "cat", "CAT"), ("A", "an", "An"), ("AN", "a", "A"),
    ("dog", "tv", "TV"), ("TV", "dog", "dog"), ("Fire hydrant", "teddy bear", "Teddy bear"),
])
def test_copy_case(original, replacement, expected):
    assert copy_case(original, replacement) == expected


def test_small_helpers():
    assert [indefinite_article(w) for w in ["orange", "red", "hour", "unicorn", "elephant", "TV"]] == [
        "an", "a", "an", "a", "an", "a"]
    assert mid_sentence("A dog") == "a dog" and mid_sentence("NYC street") == "NYC street"
    assert tidy(" a  dog \n on a couch .") == "a dog on a couch."
