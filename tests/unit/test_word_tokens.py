"""The word-memo tokenizer gives open_clip's own ids: on the captions, paraphrases and flips
the generators make from tests/data/base_sample.jsonl, on random printable ASCII (the fast
path's whole domain: punctuation, apostrophes, digits, case, runs of spaces), on texts that
must take open_clip's path (entities, non-ASCII, tabs and line breaks, mojibake) and on
texts longer than the context."""
import json
import random
import string
from collections import Counter
from pathlib import Path

import ftfy
import numpy as np
import pytest
from open_clip.tokenizer import SimpleTokenizer

from lgip.models.word_tokens import WordMemoTokenizer

REPO = Path(__file__).resolve().parents[2]
PRINTABLE_WITHOUT_AMPERSAND = string.printable[:95].replace("&", "")  # printable ASCII: letters to '~' and ' '


@pytest.fixture(scope="module")
def tokenizer():
    return SimpleTokenizer()


def lgip_texts():
    """Every caption of the sample and what both paper generators make of it."""
    import diff_gen_caption
    import rebuttal_enhanced_perturb_with_fliptypes as enhanced

    texts = set()
    rng = random.Random(42)
    for line in (REPO / "tests" / "data" / "base_sample.jsonl").read_text().splitlines():
        captions = json.loads(line)["orig_captions"]
        texts.update(captions)
        for module in (diff_gen_caption, enhanced):
            perturbed = module.perturb_captions(captions, rng, Counter())
            texts.update(text for key in ("same_caps", "diff_caps") for group in perturbed[key].values()
                         for text in group)
    return sorted(texts)


def random_ascii(rng: random.Random, count: int):
    pieces = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "  ", "a", "Dog", "don't", "3", "2nd", "...", "x-ray",
              "<start_of_text>", "<end_of_text>", "'S", "WE'LL"]
    texts = []
    for _ in range(count):
        parts = [rng.choice(pieces) if rng.random() < 0.4 else
                 "".join(rng.choice(PRINTABLE_WITHOUT_AMPERSAND) for _ in range(rng.randint(0, 8)))
                 for _ in range(rng.randint(0, 12))]
        texts.append(rng.choice(["", " "]).join(parts))
    return texts


SLOW_PATH = ["a dog &amp; a cat", "fish &lt;3 chips", "caf\u00e9 au lait", "na\u00efve", "two\tdogs", "line\nbreak",
             "\u201ccurly\u201d quotes", "Ã©tÃ© mojibake", "\ufb01sh ligature", "ＦＵＬＬ width", "emoji 🐶 dog",
             "control\x07char", "\x1b[31mred\x1b[0m", "crlf\r\nline", "&", "&&", "a&b"]


def assert_same_as_open_clip(tokenizer, texts):
    words = WordMemoTokenizer(tokenizer)
    ids, lengths, truncated = words.batch(texts, tokenizer.context_length)
    expected = tokenizer(texts).numpy()
    np.testing.assert_array_equal(ids, expected)
    assert lengths.tolist() == [int(np.flatnonzero(row).max()) + 1 for row in expected]  # id 0 is '!' as well as padding
    assert truncated.tolist() == [len(tokenizer.encode(text)) + 2 > tokenizer.context_length for text in texts]
    return words


def test_lgip_texts_get_open_clips_ids(tokenizer):
    texts = lgip_texts()
    assert len(texts) > 2000
    words = assert_same_as_open_clip(tokenizer, texts)
    assert words.applies and 0 < len(words.words) < len(texts) // 4  # the fast path ran, on far fewer words than texts


def test_random_printable_ascii_gets_open_clips_ids(tokenizer):
    texts = random_ascii(random.Random(0), 3000)
    assert all(ftfy.fix_text(text) == text for text in texts)  # the fact the fast path rests on
    assert_same_as_open_clip(tokenizer, texts)


def test_texts_outside_the_fast_path_and_long_texts_get_open_clips_ids(tokenizer):
    long = [" ".join(["a red dog"] * 40), "word " * 75, "word " * 76, "x" * 500]
    words = assert_same_as_open_clip(tokenizer, SLOW_PATH + long + [text.upper() for text in SLOW_PATH])
    assert not any("&" in word or not word.isascii() for word in words.words)  # those went to open_clip


def test_other_cleanings_go_through_open_clip():
    canonical = SimpleTokenizer(clean="canonicalize")
    assert not WordMemoTokenizer(canonical).applies
    whitespace = SimpleTokenizer(clean="whitespace")
    assert WordMemoTokenizer(whitespace).applies
    assert_same_as_open_clip(whitespace, ["A Red DOG's toy", "Two  Cats"] + random_ascii(random.Random(1), 500))
