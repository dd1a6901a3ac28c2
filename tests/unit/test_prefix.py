"""Prefix-shared text encoding (lgip/models/prefix.py): the trie holds exactly the distinct
prefixes, packs hold every ancestor they need, and the embeddings equal each backend's
plain per-text encoding (open_clip `encode_text` on 77-token padding, transformers
`get_text_features` on max_length padding) within 1e-5."""
import itertools
import random

import numpy as np
import pytest
import torch

from lgip.models.prefix import (build_prefix_trie, encode_prefix_shared_hf_clip, encode_prefix_shared_openclip,
                                plan_packs, supports_prefix_sharing)

TOLERANCE = 1e-5
CONTEXT = 77
SOT, EOT = 49406, 49407  # open_clip's SimpleTokenizer
TEXTS = [
    "a red dog on the grass", "a red dog on the grass in the scene", "a blue dog on the grass",
    "a red dog on the grass", "two red dogs on the grass", "a red dog", "a red dog on the grass.", "a", "",
    "a photo of a red dog on the grass", "two cats sleeping on a wooden bench next to a man " * 10,  # cut at 77
]


def random_rows(seed: int, count: int, vocab: int = 6, end: int = 9):
    """Short rows over a small vocabulary, so prefixes are shared and rows repeat; each
    ends with `end` (a higher id than any other, as CLIP's end token is)."""
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randrange(0, 7))] + [end] for _ in range(count)]


# --------------------------------------------------------------------------- the trie

def test_trie_nodes_are_the_distinct_prefixes():
    rows = random_rows(0, 400)
    trie = build_prefix_trie(rows)
    prefixes = {tuple(row[:k]) for row in rows for k in range(1, len(row) + 1)}
    assert trie.num_nodes == len(prefixes) < sum(map(len, rows))
    # Walking up from each text's node spells the text; depth is the position index.
    for row, node in zip(rows, trie.text_node):
        spelled = []
        while node >= 0:
            assert trie.depth[node] == len(row) - 1 - len(spelled)
            spelled.append(int(trie.token[node]))
            node = trie.parent[node]
        assert spelled[::-1] == row
    # Preorder: node k's subtree is exactly k .. subtree_end[k]-1.
    for node in range(trie.num_nodes):
        descendants = {k for k in range(trie.num_nodes) if node in set(trie.ancestors(k)) | {k}}
        assert descendants == set(range(node, trie.subtree_end[node]))


def test_trie_edge_cases():
    trie = build_prefix_trie([[5], [5], [5, 9], [7]])
    assert trie.num_nodes == 3 and trie.text_node[0] == trie.text_node[1]
    assert trie.parent[trie.text_node[2]] == trie.text_node[0]
    assert build_prefix_trie([]).num_nodes == 0
    with pytest.raises(ValueError, match="empty"):
        build_prefix_trie([[1], []])


@pytest.mark.parametrize("budget", [10, 16, 64])
def test_packs_own_every_node_once_and_hold_their_ancestors(budget):
    trie = build_prefix_trie(random_rows(1, 300))
    packs = plan_packs(trie, budget)
    owned = np.concatenate([pack.nodes[pack.owned_from:] for pack in packs])
    assert np.array_equal(owned, np.arange(trie.num_nodes))
    for pack in packs:
        assert len(pack.nodes) <= budget
        members = set(pack.nodes.tolist())
        assert all(set(trie.ancestors(node).tolist()) <= members for node in pack.nodes)
    assert len(packs) > 1


def test_pack_budget_must_fit_the_deepest_path():
    trie = build_prefix_trie([list(range(20))])
    with pytest.raises(ValueError, match="ancestors"):
        plan_packs(trie, 20)
    assert len(plan_packs(trie, 21)) == 1


# --------------------------------------------------------------------------- open_clip

@pytest.fixture(scope="module")
def openclip_model(tiny_models):
    """(the session's tiny open_clip module, its tokenizer), loaded the way open_clip does."""
    import open_clip

    name = tiny_models.openclip[len("openclip:"):]
    model, _, _ = open_clip.create_model_and_transforms(name)
    return model.eval(), open_clip.get_tokenizer(name)


def unpadded(ids):
    """Token rows without the trailing pad id 0."""
    return [row[:int((row != 0).sum())].tolist() for row in ids]


def padded(rows, width=CONTEXT, pad=0):
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.as_tensor(row)
    return ids


def plain_openclip(model, ids):
    with torch.no_grad():
        return torch.nn.functional.normalize(model.encode_text(ids).float(), dim=-1)


def assert_close(got, want):
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == want.shape
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(got)), atol=1e-6)
    assert (got - want).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("budget,batch", [(512, 4096), (80, 80), (100, 300)])
def test_openclip_equals_encode_text(openclip_model, budget, batch):
    model, tokenizer = openclip_model
    ids = tokenizer(TEXTS)
    rows = unpadded(ids)
    assert len(rows[-1]) == CONTEXT and rows[-1][-1] == EOT and rows[TEXTS.index("")] == [SOT, EOT]
    # Hand-made rows beside the tokenizer's: the end token alone, one token and the end token.
    extra = [[EOT], [320, EOT], [SOT, 320, 1125, EOT]]
    rows += extra
    ids = torch.cat([ids, padded(extra)])
    got = encode_prefix_shared_openclip(model, rows, max_nodes_per_pack=budget, nodes_per_batch=batch)
    assert_close(got, plain_openclip(model, ids))


def test_openclip_many_texts_across_packs(openclip_model):
    """Hundreds of template texts: many packs, several batches, the last one ragged."""
    model, tokenizer = openclip_model
    subjects = ["a red dog", "two blue cars", "a man", "the green bus", "three people"]
    places = ["on the grass", "near the road", "at the beach", ""]
    templates = ["{}", "{} in the scene", "a photo of {}", "there is {}", "{}."]
    texts = [t.format(f"{s} {p}".strip()) for s, p, t in itertools.product(subjects, places, templates)]
    texts += texts[:7]  # duplicates
    ids = tokenizer(texts)
    rows = unpadded(ids)
    trie = build_prefix_trie(rows)
    assert trie.num_nodes < 0.6 * sum(map(len, rows))
    got = encode_prefix_shared_openclip(model, rows, max_nodes_per_pack=96, nodes_per_batch=3 * 96)
    assert len(plan_packs(trie, 96)) >= 4  # and batches of up to 3 packs: the last one ragged
    assert_close(got, plain_openclip(model, ids))


def test_openclip_eos_pooling_and_tokens_after_the_end(openclip_model):
    """A tower that pools the first eos id reads nothing after it: rows that differ only
    past it give the same embedding, equal to encode_text's."""
    model, _ = openclip_model
    model.text_pool_type, model.text_eos_id = "eos", 400
    try:
        rows = [[SOT, 320, 400], [SOT, 320, 400, 5000, 6000], [SOT, 320, 1125, 500, 400, 9]]
        got = encode_prefix_shared_openclip(model, rows, max_nodes_per_pack=80)
        assert_close(got, plain_openclip(model, padded(rows)))
        assert torch.equal(got[0], got[1])
    finally:
        model.text_pool_type, model.text_eos_id = "argmax", None


def test_openclip_custom_text_tower():
    """EVA02-style CustomTextCLIP (the text tower in model.text)."""
    from open_clip.model import CustomTextCLIP

    torch.manual_seed(0)
    model = CustomTextCLIP(embed_dim=32, vision_cfg={"image_size": 16, "layers": 1, "width": 32, "patch_size": 8,
                                                     "head_width": 16},
                           text_cfg={"context_length": CONTEXT, "vocab_size": 49408, "width": 32, "heads": 2,
                                     "layers": 2}).eval()
    rows = [[SOT, 320, 1125, EOT], [SOT, 320, 1125, 530, EOT], [SOT, 320, EOT], [SOT, 320, 1125, EOT]]
    assert supports_prefix_sharing(model)
    got = encode_prefix_shared_openclip(model, rows, max_nodes_per_pack=80)
    assert_close(got, plain_openclip(model, padded(rows)))


def test_openclip_refuses_a_bidirectional_tower():
    from open_clip.model import CLIP

    model = CLIP(embed_dim=16, vision_cfg={"image_size": 16, "layers": 1, "width": 32, "patch_size": 8,
                                           "head_width": 16},
                 text_cfg={"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1,
                           "no_causal_mask": True})
    assert not supports_prefix_sharing(model)
    with pytest.raises(ValueError, match="both ways"):
        encode_prefix_shared_openclip(model, [[1, 2]])


def test_openclip_rejects_rows_longer_than_the_context(openclip_model):
    model, _ = openclip_model
    with pytest.raises(ValueError, match="77 positions"):
        encode_prefix_shared_openclip(model, [[SOT] + [320] * 77 + [EOT]])
    assert encode_prefix_shared_openclip(model, []).shape == (0, 64)


# --------------------------------------------------------------------------- transformers CLIP

HF_VOCAB, HF_POSITIONS, HF_PAD = 120, 24, 1


def tiny_hf_clip(eos_token_id: int, attn_implementation: str):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": HF_VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": HF_POSITIONS,
                     "eos_token_id": eos_token_id, "pad_token_id": HF_PAD, "bos_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
        projection_dim=24)
    return CLIPModel._from_config(config, attn_implementation=attn_implementation).eval()


def plain_hf(model, rows):
    """get_text_features on max_length padding with an attention mask, as the engine calls it."""
    ids = padded(rows, HF_POSITIONS, HF_PAD)
    mask = (torch.arange(HF_POSITIONS)[None, :] < torch.as_tensor([len(r) for r in rows])[:, None]).long()
    with torch.no_grad():
        output = model.get_text_features(input_ids=ids, attention_mask=mask)
    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(features.float(), dim=-1)


@pytest.mark.parametrize("eos_token_id,end", [(2, HF_VOCAB - 1), (50, 50)])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_hf_clip_equals_get_text_features(eos_token_id, end, attn_implementation):
    """eos_token_id 2 is transformers' legacy rule (pool the highest id); any other id is
    pooled where it first occurs, even after higher ids (ids above 50 occur here)."""
    model = tiny_hf_clip(eos_token_id, attn_implementation)
    rows = random_rows(2, 120, vocab=HF_VOCAB - 20, end=end)
    rows = [[0] + row for row in rows] + [[end], [0, 7, end], [0] + [60] * (HF_POSITIONS - 2) + [end]]
    assert supports_prefix_sharing(model)
    got = encode_prefix_shared_hf_clip(model, rows, max_nodes_per_pack=40, nodes_per_batch=120)
    assert_close(got, plain_hf(model, rows))


def test_hf_refuses_siglip():
    from transformers import SiglipConfig, SiglipModel

    config = SiglipConfig(
        text_config={"vocab_size": 50, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 16, "patch_size": 8})
    model = SiglipModel(config).eval()
    assert not supports_prefix_sharing(model)
    with pytest.raises(ValueError, match="SigLIP.*both ways"):
        encode_prefix_shared_hf_clip(model, [[3, 1]])
