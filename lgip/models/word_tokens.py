"""open_clip's CLIP tokenizer (CLIP, OpenCLIP, EVA02), the same ids several times faster on
LGIP's texts.

open_clip's `SimpleTokenizer` cleans each text with ftfy and html.unescape, collapses
whitespace, lower-cases, splits the text with a regular expression and BPE-encodes each
piece. LGIP's texts are a few thousand words in many combinations, and most of that time
goes to ftfy and the expression, text after text. Two facts make a shortcut exact:
- on a text of printable ASCII without `&`, ftfy and html.unescape change nothing (no
  mojibake, control character, line break, entity or non-ASCII letter to fix), so the
  cleaning is `" ".join(text.split())`, lower-cased;
- no piece the expression matches holds whitespace, so a text's ids are its
  space-separated words' ids one after the other.
So such a text costs a split and one dictionary lookup per word; each new word is encoded
once by open_clip itself. Any other text (and any tokenizer configured otherwise) goes
through open_clip's own `encode`. tests/unit/test_word_tokens.py checks the ids against
open_clip's on generated captions, random ASCII and texts that take the slow path.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

MAX_REMEMBERED_WORDS = 1 << 20  # the word table is emptied past this (a set of unique ids, say)


class WordMemoTokenizer:
    """`encode(text)` and `batch(texts)` with the ids of open_clip's `tokenizer`.
    `applies` is False where the tokenizer is configured in a way the shortcut does not
    cover (another cleaning, a reduction of long texts): everything then goes through
    open_clip."""

    def __init__(self, tokenizer):
        from open_clip import tokenizer as open_clip_tokenizer

        self.tokenizer = tokenizer
        # The cleanings the shortcut reproduces, looked up so that an open_clip without them
        # (renamed, say) only turns the shortcut off.
        clean = getattr(tokenizer, "clean_fn", None)
        lower, whitespace = (getattr(open_clip_tokenizer, name, None) for name in ("_clean_lower", "_clean_whitespace"))
        self.lower = clean is not None and clean is lower
        self.applies = ((self.lower or (clean is not None and clean is whitespace))
                        and getattr(tokenizer, "reduction_fn", None) is None)
        self.words = {}

    def encode(self, text: str) -> List[int]:
        """The BPE ids of `text` (no start or end token), as `tokenizer.encode(text)`."""
        if not (self.applies and text.isascii() and text.isprintable() and "&" not in text):
            return self.tokenizer.encode(text)
        words = self.words
        if len(words) > MAX_REMEMBERED_WORDS:
            words.clear()
        ids = []
        for word in (text.lower() if self.lower else text).split():
            known = words.get(word)
            if known is None:
                known = words[word] = tuple(self.tokenizer.encode(word))
            ids.extend(known)
        return ids

    def batch(self, texts: Sequence[str], context_length: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids [N, context_length] int64 as `tokenizer(texts)` gives them: start token,
        ids, end token, zeros, a text that does not fit cut and ended with the end token;
        lengths, up to and including the end token; truncated: the text did not fit)."""
        start, end = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        ids = np.zeros((len(texts), context_length), dtype=np.int64)
        lengths = np.zeros(len(texts), dtype=np.int64)
        truncated = np.zeros(len(texts), dtype=bool)
        for row, text in enumerate(texts):
            tokens = [start, *self.encode(text), end]
            if len(tokens) > context_length:
                tokens = tokens[:context_length]
                tokens[-1] = end
                truncated[row] = True
            ids[row, :len(tokens)] = tokens
            lengths[row] = len(tokens)
        return ids, lengths, truncated
