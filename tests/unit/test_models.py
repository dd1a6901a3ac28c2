"""The model interface on both tiny backends (open_clip `local-dir:` and transformers
SigLIP), loaded once through their spec strings: pixels in [0, 1] and the model's own
normalisation, raw image features with gradients, text features equal to the engine's
cached embeddings, exact padding trimming, SigLIP's padding, and the logit scale/bias."""
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lgip.engine import EvalSettings, PairPlan, score_plan
from lgip.engine.cache import ShardStore
from lgip.engine.embed import encode_text_units, tokenize_all
from lgip.engine.scores import text_units
from lgip.models import load_model
from tests.helpers import TOL, PlainEncoder, cache_files

IMAGE_SIZE = 32  # both tiny models take 32x32 images
TEXTS = ["a dog", "A man riding a horse down a long and winding dusty road at sunset.", "two red cars",
         "a photo of a cat sitting on a green couch"]


@pytest.fixture(params=["openclip_model", "siglip_model"])
def model(request):
    """Each tiny backend in turn, as loaded once for the session."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def pil_images(tiny_models):
    """Three of the drawn 64x48 images, decoded."""
    images = []
    for path in tiny_models.images[:3]:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def test_pixels_are_in_unit_range_and_normalise_to_the_models_preprocessing(model, pil_images):
    for image in pil_images:
        pixels = model.to_pixels(image)
        assert pixels.dtype == torch.float32 and tuple(pixels.shape) == (3, IMAGE_SIZE, IMAGE_SIZE)
        assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0
        expected = model.image_transform(image)
        assert float(expected.min()) < 0.0  # the model's input is normalised; the pixels are not
        assert torch.allclose(model.normalize_pixels(pixels), expected, atol=1e-6, rtol=0)


def test_encode_images_equals_unit_image_features_of_the_pixels(model, pil_images):
    normalized = torch.stack([model.image_transform(image) for image in pil_images])
    pixels = torch.stack([model.to_pixels(image) for image in pil_images])
    embeddings = model.encode_images(normalized)
    raw = model.image_features(pixels)
    assert raw.dtype == torch.float32 and raw.shape == embeddings.shape and raw.shape[0] == len(pil_images)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(len(pil_images)), atol=1e-3)  # raw, not unit rows
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(len(pil_images)), atol=TOL)
    assert torch.allclose(embeddings, torch.nn.functional.normalize(raw, dim=-1).cpu(), atol=TOL, rtol=0)


def test_gradients_flow_to_the_pixels(model, pil_images):
    pixels = torch.stack([model.to_pixels(image) for image in pil_images]).requires_grad_(True)
    features = model.image_features(pixels, grad=True)
    assert features.requires_grad
    # A cosine with a fixed direction, as a probe on pixels would use; grad only for the pixels.
    direction = torch.nn.functional.normalize(torch.arange(features.shape[1], dtype=torch.float32), dim=0)
    loss = (torch.nn.functional.normalize(features, dim=-1) @ direction).sum()
    (gradient,) = torch.autograd.grad(loss, pixels)
    assert gradient.shape == pixels.shape and torch.isfinite(gradient).all()
    assert (gradient.flatten(1).abs().sum(dim=1) > 0).all()  # every image gets a gradient
    assert not model.image_features(pixels).requires_grad  # grad=False: no graph, even for such input


def test_text_features_equal_the_engines_cached_embeddings(model, tiny_models, tmp_path):
    plan = PairPlan()
    plan.add_record(1, tiny_models.images[0], TEXTS[:2], [[[(TEXTS[2], "same")]], [[(TEXTS[3], "diff")]]])
    plan.finish()
    settings = EvalSettings(device="cpu", workers=0, cache_dir=str(tmp_path / "cache"), text_batch_size=2,
                            progress=False)
    score_plan(model, plan, settings)
    written = cache_files(tmp_path / "cache", "texts")
    cached = score_plan(model, plan, settings)  # every text now comes from the cache
    assert written and cache_files(tmp_path / "cache", "texts") == written
    engine = np.concatenate([cached.text_embeddings[cached.caption_unit], cached.text_embeddings[cached.pair_unit]])
    texts = [plan.texts[t] for t in np.concatenate([plan.caption_text, plan.pair_text])]
    assert texts == TEXTS
    features = model.text_features(texts)
    assert features.dtype == torch.float32 and features.device.type == "cpu"
    assert np.allclose(features.numpy(), engine, atol=TOL, rtol=0)


def test_logit_scale_and_bias(openclip_model, siglip_model):
    # open_clip initialises CLIP's temperature to log(1/0.07); the tiny model stores it in fp16.
    assert openclip_model.logit_scale() == pytest.approx(1 / 0.07, rel=2e-3)
    assert openclip_model.logit_bias() is None
    scale, bias = siglip_model.logit_scale(), siglip_model.logit_bias()
    assert isinstance(scale, float) and scale > 0
    assert scale == pytest.approx(math.exp(float(siglip_model.model.logit_scale.detach())), rel=1e-6)
    assert isinstance(bias, float) and math.isfinite(bias)


def test_logit_scale_and_bias_read_the_parameters_without_a_warning(openclip_model, siglip_model):
    # The parameters keep requires_grad as loaded; reading them as floats must not warn.
    # torch warns once a process unless told to warn always, so the order of tests does not matter.
    warned_always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for model in (openclip_model, siglip_model):
                model.logit_scale(), model.logit_bias()
    finally:
        torch.set_warn_always(warned_always)


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
