"""The tiny offline models and data of lgip/tiny.py (and the tests' write_records) load
through the real open_clip and transformers entry points, produce usable features, and
are built the same way every time. The session's tiny models are the first build; the
tests build again beside them to compare."""
import json
import os

import pytest
import torch

from lgip.tiny import CAPTIONS, build_tiny_openclip, build_tiny_siglip, draw_images
from tests.helpers import write_records


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def images(work):
    return draw_images(work / "images", 4)


@pytest.fixture(scope="module")
def built(tiny_models):
    """The folder the session's tiny models were built in."""
    return tiny_models.root


@pytest.fixture(scope="module")
def openclip_spec(tiny_models):
    return tiny_models.openclip


@pytest.fixture(scope="module")
def siglip_spec(tiny_models):
    return tiny_models.siglip


def test_openclip_local_dir_loads_and_encodes(openclip_spec, images, built):
    import open_clip
    from PIL import Image
    from open_clip.tokenizer import SimpleTokenizer

    assert openclip_spec == "openclip:local-dir:" + str(built / "openclip")
    name = openclip_spec[len("openclip:"):]
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    assert isinstance(tokenizer, SimpleTokenizer) and tokenizer.context_length == 77
    model.eval()
    with torch.no_grad():
        tokens = tokenizer(["a red dog", "two cats on a bus", "A man riding a horse."])
        assert tokens.shape == (3, 77) and int(tokens.max()) < 49408
        text = model.encode_text(tokens)
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images[:2]])
        assert pixels.shape == (2, 3, 32, 32)
        image = model.encode_image(pixels)
    assert text.shape == (3, 64) and image.shape == (2, 64)
    assert torch.isfinite(text).all() and torch.isfinite(image).all()
    assert not torch.allclose(text[0], text[1])


def test_openclip_build_is_deterministic(openclip_spec, built, work):
    from safetensors.torch import load_file

    again = build_tiny_openclip(work / "openclip_again")
    first = load_file(str(built / "openclip" / "open_clip_model.safetensors"))
    second = load_file(str(work / "openclip_again" / "open_clip_model.safetensors"))
    assert again.endswith("openclip_again") and first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert os.path.getsize(built / "openclip" / "open_clip_model.safetensors") < 10 * 2 ** 20


def test_siglip_folder_loads_through_auto_classes(siglip_spec, images, built):
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer

    assert siglip_spec == "hf:" + str(built / "siglip")
    folder = siglip_spec[len("hf:"):]
    model = AutoModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    image_processor = AutoImageProcessor.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "SiglipModel" and type(processor).__name__ == "SiglipProcessor"

    text_config = model.config.text_config
    assert tokenizer.pad_token_id == text_config.pad_token_id
    assert tokenizer.eos_token_id == text_config.eos_token_id
    assert tokenizer.vocab_size == text_config.vocab_size

    encoded = tokenizer(["a red dog"], padding="max_length", max_length=64)
    ids = encoded["input_ids"][0]
    assert len(ids) == 64 and ids[-1] == tokenizer.pad_token_id
    n_text = len(tokenizer("a red dog", add_special_tokens=False)["input_ids"])
    assert 0 < n_text < 63 and ids[n_text] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids[:n_text]

    pixels = image_processor([Image.open(p).convert("RGB") for p in images[:2]], return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (2, 3, 32, 32)
    with torch.no_grad():
        text = model.get_text_features(input_ids=torch.tensor([ids]))
        image = model.get_image_features(pixel_values=pixels)
    # transformers 4.x returns tensors, 5.x model outputs with the features as pooler_output.
    text = getattr(text, "pooler_output", text)
    image = getattr(image, "pooler_output", image)
    assert text.shape == (1, 32) and image.shape == (2, 32)
    assert torch.isfinite(text).all() and torch.isfinite(image).all()


def test_draw_images_gives_distinct_readable_jpegs(images, work):
    from PIL import Image

    assert len(images) == 4 and len(set(images)) == 4
    contents = set()
    for path in images:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (64, 48)
            contents.add(image.tobytes())
    assert len(contents) == 4
    again = draw_images(work / "images_again", 4)
    assert [open(a, "rb").read() for a in images] == [open(b, "rb").read() for b in again]


def test_write_records_gives_relative_paths_and_five_captions(images, work):
    path = write_records(work / "data" / "base.jsonl", images)
    folder = os.path.dirname(path)
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    assert [r["image_id"] for r in records] == list(range(len(images)))
    for record, image in zip(records, images):
        assert record["file_name"] == os.path.basename(image)
        assert not os.path.isabs(record["image_path"])
        assert os.path.samefile(os.path.join(folder, record["image_path"]), image)
        captions = record["orig_captions"]
        assert len(captions) == 5 and len(set(captions)) == 5
        assert all(isinstance(c, str) and c in CAPTIONS for c in captions)
    assert len(CAPTIONS) >= 50 and len(set(CAPTIONS)) == len(CAPTIONS)


def test_siglip_build_is_byte_for_byte_reproducible(siglip_spec, built, work):
    build_tiny_siglip(work / "siglip_again", CAPTIONS)
    names = sorted(os.listdir(built / "siglip"))
    assert names == sorted(os.listdir(work / "siglip_again")) and "spiece.model" in names
    for name in names:
        assert (built / "siglip" / name).read_bytes() == (work / "siglip_again" / name).read_bytes(), name
