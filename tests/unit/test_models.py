"""The model backends on the tiny models, loaded once through their spec strings:
exact padding trimming for open_clip, and SigLIP's padding."""
import numpy as np
import torch

from lgip.engine import PairPlan
from lgip.engine.cache import ShardStore
from lgip.engine.embed import encode_text_units, tokenize_all
from lgip.engine.scores import text_units
from lgip.models import load_model
from tests.helpers import TOL, PlainEncoder


def test_trimmed_text_encoding_equals_full_padding(tiny_models, openclip_model):
    model = openclip_model
    assert model.trims_padding
    texts = ["a dog", "A man riding a horse down a long and winding dusty road at sunset.", "two red cars"]
    tokens = model.tokenize(texts)
    full = model.encode_tokens(tokens.ids, tokens.lengths)
    cut = int(tokens.lengths.max())
    trimmed = model.encode_tokens(tokens.ids[:, :cut], tokens.lengths)
    assert cut < tokens.ids.shape[1]
    assert torch.allclose(full, trimmed, atol=TOL)
    reference = PlainEncoder(tiny_models.openclip).texts(texts)
    assert torch.allclose(full, reference, atol=TOL)


def test_siglip_text_embedding_ignores_batch_mates_only_under_max_length(tiny_models, siglip_model):
    text, mates = "a red car", ["a man riding a horse down the long street next to a building"]
    longest = load_model(tiny_models.siglip, "cpu", "fp32", siglip_padding="longest")
    for model, should_match in [(siglip_model, True), (longest, False)]:
        padding = model.padding
        plan = PairPlan()
        plan.add_record(1, "x.jpg", [text, mates[0]], [[], []])
        plan.add_record(2, "y.jpg", [text], [[]])
        plan.finish()
        tokens = tokenize_all(model, plan.texts, progress=False)
        caption_unit, _, unit_text, unit_width = text_units(plan, tokens, padding == "longest")
        store = ShardStore(None, "texts", 10)
        embeddings = encode_text_units(model, plan.texts, tokens, unit_text, unit_width, store, 8, False)
        alone, with_mate = embeddings[caption_unit[2]], embeddings[caption_unit[0]]
        assert np.allclose(alone, with_mate, atol=TOL) == should_match, padding
