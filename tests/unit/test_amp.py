"""`--precision amp`: fp32 weights, autocast activations, recorded where it changes an
embedding, close to fp32 on the tiny open_clip model."""
import pytest
import torch

from lgip.models import load_model


@pytest.fixture(scope="module")
def tiny_openclip(tiny_models):
    return tiny_models.openclip


def test_amp_keeps_fp32_weights_and_records_the_autocast_dtype(tiny_openclip):
    fp32, amp = load_model(tiny_openclip, "cpu", "fp32"), load_model(tiny_openclip, "cpu", "amp")
    assert next(amp.model.parameters()).dtype == torch.float32
    assert amp.settings()["precision"] == "amp" and amp.settings()["autocast_dtype"] == "bfloat16"
    assert "autocast_dtype" not in fp32.settings()  # the other precisions' cache keys are unchanged


def test_amp_embeddings_are_close_to_fp32_but_computed_in_bfloat16(tiny_openclip):
    fp32, amp = load_model(tiny_openclip, "cpu", "fp32"), load_model(tiny_openclip, "cpu", "amp")
    texts = ["a red car parked on the street", "two dogs playing in the park"]
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    text_gap = (fp32.text_features(texts) - amp.text_features(texts)).abs().max().item()
    image_gap = (fp32.encode_images(pixels) - amp.encode_images(pixels)).abs().max().item()
    assert 0 < text_gap < 5e-2 and 0 < image_gap < 5e-2  # bfloat16 rounding, not identical, not far
