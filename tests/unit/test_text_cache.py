"""Texts through the engine: prefix-shared encoding (on by default where the tower is
causal and pools at the end token) against the plain path on the tiny open_clip and a
tiny transformers CLIP; token facts kept beside the embeddings, so that a run whose
texts are cached asks for no tokenizer; shards written before the facts existed still
read (their texts tokenised, then written again with facts)."""
import hashlib
import json
import string

import numpy as np
import pytest
import torch

import lgip.engine.embed as embed
from lgip.engine import EvalSettings
from lgip.engine.cache import ShardStore, TokenFacts, text_key
from lgip.engine.embed import cache_stores, embed_text_units, embed_texts, token_hashes, tokenize_all
from lgip.engine.warm import CachedModel
from lgip.models import load_model
from lgip.tiny import CAPTIONS
from tests.helpers import TOL, cache_files

# Captions, their paraphrase-like and flip-like variants (shared prefixes), and a text
# longer than CLIP's 77 tokens.
TEXTS = list(dict.fromkeys(
    CAPTIONS[:12] + [caption.rstrip(".") + " in the scene." for caption in CAPTIONS[:12]]
    + [caption.replace("red", "blue") for caption in CAPTIONS if "red" in caption]
    + ["a photo of " + caption.lower() for caption in CAPTIONS[:6]] + ["two cats on a bench next to a man " * 12]))


def no_cache():
    return EvalSettings(device="cpu", workers=0, cache_dir=None, progress=False)


def refuse(*_args, **_kwargs):
    raise AssertionError("this path must not be taken")


def build_tiny_hf_clip(folder):
    """A tiny transformers CLIP saved with save_pretrained: a character-level
    CLIPTokenizer (no merges, 24 positions), 32-wide towers, 16 px images."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    characters = string.ascii_lowercase + string.digits + ".,!?'-"
    vocab = ["<|startoftext|>", "<|endoftext|>"] + list(characters) + [c + "</w>" for c in characters]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=24).save_pretrained(folder)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 24, "eos_token_id": 1, "pad_token_id": 1,
                     "bos_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 16, "patch_size": 8},
        projection_dim=24)
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(folder)
    return f"hf:{folder}"


@pytest.fixture(scope="module")
def hf_clip_spec(tmp_path_factory):
    return build_tiny_hf_clip(tmp_path_factory.mktemp("hf_clip") / "model")


@pytest.mark.parametrize("backend", ["openclip", "hf_clip"])
def test_prefix_sharing_on_and_off_agree_through_the_engine(backend, tiny_models, hf_clip_spec, monkeypatch):
    spec = tiny_models.openclip if backend == "openclip" else hf_clip_spec
    shared, plain = load_model(spec, "cpu", "fp32"), load_model(spec, "cpu", "fp32", prefix_sharing=False)
    assert shared.prefix_sharing and shared.settings()["prefix_sharing"] is True
    assert not plain.prefix_sharing and "prefix_sharing" not in plain.settings()
    monkeypatch.setattr(embed, "PREFIX_CHUNK_ROWS", 7)  # several chunks, cut inside groups of shared prefixes
    monkeypatch.setattr(shared, "encode_tokens", refuse)  # the shared path never pads
    monkeypatch.setattr(plain, "encode_token_rows", refuse)
    with_sharing, without = embed_texts(shared, TEXTS, no_cache()), embed_texts(plain, TEXTS, no_cache())
    assert with_sharing.shape == (len(TEXTS), without.shape[1])
    np.testing.assert_allclose(with_sharing, without, atol=TOL, rtol=0)
    monkeypatch.undo()
    np.testing.assert_allclose(with_sharing, plain.text_features(TEXTS).numpy(), atol=TOL, rtol=0)


def test_siglip_never_shares_prefixes(siglip_model):
    assert not siglip_model.prefix_sharing and "prefix_sharing" not in siglip_model.settings()


def test_encode_token_rows_without_sharing_pads_as_the_model_does(openclip_model, siglip_model):
    for model in (openclip_model, siglip_model):
        tokens = tokenize_all(model, TEXTS[:5], progress=False)
        plain = load_model(model.spec, "cpu", "fp32", prefix_sharing=False)
        got = plain.encode_token_rows(tokens.token_lists(np.arange(5)))
        np.testing.assert_allclose(got.numpy(), model.text_features(TEXTS[:5]).numpy(), atol=TOL, rtol=0)


def test_token_hashes_see_every_token_and_its_place():
    rows = np.array([[5, 6, 7, 0], [5, 6, 7, 9], [6, 5, 7, 0], [5, 6, 8, 0]])
    hashes = token_hashes(rows, np.array([3, 3, 3, 3]))
    assert hashes.shape == (4, 2) and hashes.dtype == np.uint64
    assert (hashes[0] == hashes[1]).all()  # what lies past the length is not part of the text
    assert len({tuple(h) for h in hashes[[0, 2, 3]].tolist()}) == 3  # order and every token count
    assert (hashes[:, 0] != hashes[:, 1]).all()  # two different hashes, not one twice


def stand_in(model):
    """A CachedModel of `model` that refuses to load anything."""
    record = {"model": {"backend": model.backend, "padding": getattr(model, "padding", "max_length"),
                        "settings": json.loads(json.dumps(model.settings()))}}
    return CachedModel(model.spec, model.device, record, load=refuse)


def cached_settings(folder):
    return EvalSettings(device="cpu", workers=0, cache_dir=str(folder), progress=False)


def test_cached_texts_need_no_tokenizer(openclip_model, tmp_path):
    settings = cached_settings(tmp_path)
    first = embed_texts(openclip_model, TEXTS, settings)
    _, store = cache_stores(openclip_model, settings)
    tokens, again, _, _ = embed_text_units(stand_in(openclip_model), TEXTS, store, 8, progress=False)
    assert np.array_equal(again, first) and tokens.cached.all()
    fresh = tokenize_all(openclip_model, TEXTS, progress=False)
    for name in ("length", "truncated", "hash"):
        assert np.array_equal(getattr(tokens.facts, name), getattr(fresh.facts, name)), name
    assert tokens.truncated.sum() == 1
    # A shard still carries the digest older versions check (keys and embeddings only).
    [shard] = cache_files(tmp_path, "texts")
    with np.load(shard) as data:
        digest = hashlib.sha256(data["keys"].tobytes() + data["embeddings"].astype(np.float32).tobytes()).hexdigest()
        assert str(data["digest"]) == digest and "token_hash" in data.files


def write_as_before_token_facts(shard):
    """Rewrite a shard as the ShardStore before token facts wrote it: keys, embeddings and
    the sha256 of both, nothing else."""
    with np.load(shard) as data:
        keys, embeddings = data["keys"], data["embeddings"]
    digest = hashlib.sha256(np.ascontiguousarray(keys).tobytes())
    digest.update(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
    with open(shard, "wb") as handle:
        np.savez(handle, keys=keys, embeddings=embeddings, digest=np.asarray(digest.hexdigest()))


def test_a_cache_written_before_token_facts_is_read_then_upgraded(openclip_model, tmp_path, monkeypatch):
    settings = cached_settings(tmp_path)
    first = embed_texts(openclip_model, TEXTS, settings)
    [shard] = cache_files(tmp_path, "texts")
    write_as_before_token_facts(shard)
    _, store = cache_stores(openclip_model, settings)
    assert store.fill_with_facts([], [text_key(TEXTS[0], 0)])[3].tolist() == [False]

    tokenised = []
    original = type(openclip_model).tokenize
    monkeypatch.setattr(openclip_model, "tokenize", lambda texts: tokenised.extend(texts) or original(openclip_model, texts))
    monkeypatch.setattr(openclip_model, "encode_token_rows", refuse)  # every embedding is in the old shard
    tokens, again, _, _ = embed_text_units(openclip_model, TEXTS, store, 8, progress=False)
    assert np.array_equal(again, first) and sorted(tokenised) == sorted(TEXTS) and not tokens.cached.any()
    # The rows were written again with their facts: the next run needs no tokenizer.
    assert len(cache_files(tmp_path, "texts")) == 2
    _, store = cache_stores(openclip_model, settings)
    tokens, third, _, _ = embed_text_units(stand_in(openclip_model), TEXTS, store, 8, progress=False)
    assert np.array_equal(third, first) and tokens.cached.all()


def test_shards_keep_facts_only_when_every_row_has_them(tmp_path):
    store = ShardStore(str(tmp_path), "texts", shard_rows=10)
    facts = TokenFacts(np.array([3, 4]), np.array([False, True]), np.arange(4, dtype=np.uint64).reshape(2, 2))
    store.add(["a" * 40, "b" * 40], np.ones((2, 3), np.float32), facts)
    store.flush()
    store.add(["c" * 40], np.ones((1, 3), np.float32))  # no facts: a shard without them
    store.flush()
    found, _, got, known = ShardStore(str(tmp_path), "texts", 10).fill_with_facts(
        ["b" * 40 + "#7"], ["b" * 40, "c" * 40, "d" * 40])
    assert found.tolist() == [False] and known.tolist() == [True, False, False]
    assert got.length[0] == 4 and got.truncated[0] and got.hash[0].tolist() == [2, 3]
