"""Model specs and tags (lgip/models/spec.py): tags are unique within a run and stay
readable for checkpoint sweeps, `TAG=SPEC` names a model, the paper's models keep the
release's tags, and a spec that would silently evaluate random weights, or names a
folder that is not there, is refused before anything is loaded."""
import os

import pytest

from lgip.io import InputError
from lgip.models import PAPER_MODELS, load_model, parse_spec, parse_specs
from lgip.models.spec import ModelSpec

# A config small enough to build in a blink (open_clip's tokenizer fixes vocab and context).
TINY_OPENCLIP_CFG = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "patch_size": 8,
                                                     "head_width": 8},
                     "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


def openclip_folder(path, weights=True):
    """A folder that looks like an open_clip local-dir model (what parsing checks)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "open_clip_config.json"), "w") as handle:
        handle.write("{}")
    if weights:
        open(os.path.join(path, "open_clip_model.safetensors"), "wb").close()
    return str(path)


def tags(specs):
    return [spec.tag for spec in parse_specs(specs)]


def test_the_paper_models_keep_the_release_tags():
    assert tags(list(PAPER_MODELS)) == list(PAPER_MODELS.values())


def test_models_whose_tags_would_collide_get_their_distinguishing_folder(tmp_path):
    a = openclip_folder(tmp_path / "x" / "a" / "models" / "m")
    b = openclip_folder(tmp_path / "x" / "b" / "models" / "m")
    other = openclip_folder(tmp_path / "y" / "other")
    assert tags([f"openclip:local-dir:{a}"]) == ["openclip_models_m"]  # alone, the short tag
    assert tags([f"openclip:local-dir:{a}", f"openclip:local-dir:{b}", f"openclip:local-dir:{other}"]) == [
        "openclip_a_models_m", "openclip_b_models_m", "openclip_y_other"]


def test_a_checkpoint_sweep_stays_readable(tmp_path):
    specs = []
    for run in ("lr1e-4", "lr3e-4"):
        for epoch in (5, 10):
            checkpoint = tmp_path / "runs" / run / "checkpoints" / f"epoch_{epoch}.pt"
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_bytes(b"")
            specs.append(f"openclip:ViT-B-16@{checkpoint}")
    assert tags(specs) == ["openclip_ViT-B-16_lr1e-4_checkpoints_epoch_5.pt",
                           "openclip_ViT-B-16_lr1e-4_checkpoints_epoch_10.pt",
                           "openclip_ViT-B-16_lr3e-4_checkpoints_epoch_5.pt",
                           "openclip_ViT-B-16_lr3e-4_checkpoints_epoch_10.pt"]


def test_specs_no_path_tells_apart_get_a_short_hash(tmp_path):
    folder = openclip_folder(tmp_path / "m")
    first, second = tags([f"openclip:local-dir:{folder}", f"openclip:local-dir:{folder}/"])
    assert first != second
    assert first.startswith("openclip_") and len(first.rsplit("_", 1)[1]) == 8


def test_a_local_folder_named_like_a_paper_model_does_not_take_its_tag(tmp_path):
    folder = tmp_path / "google" / "siglip-base-patch16-224"
    folder.mkdir(parents=True)
    paper, local = tags(["hf:google/siglip-base-patch16-224", f"hf:{folder}"])
    assert paper == "siglip_google_siglip-base-patch16-224"
    assert local != paper and local.endswith("google_siglip-base-patch16-224")


def test_a_user_names_a_model_with_tag_equals_spec(tmp_path):
    folder = openclip_folder(tmp_path / "m")
    [spec] = parse_specs([f"mine-v2.1=openclip:local-dir:{folder}"])
    assert spec.tag == "mine-v2.1" and spec.spec == f"openclip:local-dir:{folder}"  # config.spec without the tag
    assert spec.default_tag == parse_spec(f"openclip:local-dir:{folder}").tag  # what names its embedding cache
    # The same model twice under two tags is allowed; the same spec twice is not.
    assert tags([f"a=openclip:local-dir:{folder}", f"b=openclip:local-dir:{folder}"]) == ["a", "b"]


@pytest.mark.parametrize("specs, message", [
    (["x/y=hf:google/a"], "the tag 'x/y' must be letters"),
    (["=hf:google/a"], "the tag '' must be letters"),
    (["ALL=hf:google/a"], "the tag 'ALL' is taken"),
    (["same=hf:google/a", "same=hf:google/b"], "would share the tag 'same'"),
    (["openclip_ViT-B-16_openai=hf:google/a", "openclip:ViT-B-16@openai"], "would share the tag"),
    (["hf:google/a", "hf:google/a"], "is given twice"),
])
def test_tags_that_cannot_work_are_refused(specs, message):
    with pytest.raises(InputError, match=message):
        parse_specs(specs)


def test_open_clip_models_must_name_their_weights(tmp_path):
    with pytest.raises(InputError, match=r"names no weights, so open_clip would evaluate random ones.*@random"):
        parse_spec("openclip:ViT-B-16")
    spec = parse_spec("openclip:ViT-B-16@random")
    assert spec.random_weights and spec.tag == "openclip_ViT-B-16_random"
    with pytest.raises(InputError, match="no such checkpoint file"):
        parse_spec(f"openclip:ViT-B-16@{tmp_path}/missing.pt")
    bare = openclip_folder(tmp_path / "bare", weights=False)
    with pytest.raises(InputError, match=r"holds no weights .*add @random"):
        parse_spec(f"openclip:local-dir:{bare}")
    assert parse_spec(f"openclip:local-dir:{bare}@random").random_weights
    with pytest.raises(InputError, match="ignores @openai for local-dir: models"):
        parse_spec(f"openclip:local-dir:{openclip_folder(tmp_path / 'full')}@openai")
    with pytest.raises(InputError, match="has no open_clip_config.json"):
        parse_spec(f"openclip:local-dir:{tmp_path}")


@pytest.mark.parametrize("spec", ["hf:/nonexistent/dir", "hf:./nope", "hf:models/tiny/siglip",
                                  "openclip:local-dir:/nonexistent/dir"])
def test_a_folder_that_is_not_there_says_so(spec):
    with pytest.raises(InputError, match=r": no such folder$"):
        parse_spec(spec)


def test_hub_ids_are_not_checked_on_disk():
    assert parse_spec("hf:google/siglip2-base-patch16-224").name == "google/siglip2-base-patch16-224"
    assert parse_spec("hf:openai-clip").name == "openai-clip"


def test_open_clip_saying_it_found_no_weights_is_an_error_unless_random(tmp_path):
    """hf-hub: models are only known to lack weights once open_clip looks (it logs, it
    does not raise); a local-dir folder without weights shows the same path offline."""
    from lgip.io import write_json

    folder = tmp_path / "tiny"
    folder.mkdir()
    write_json(str(folder / "open_clip_config.json"), {"model_cfg": TINY_OPENCLIP_CFG})
    unchecked = ModelSpec(f"openclip:local-dir:{folder}", "openclip", f"local-dir:{folder}")  # as parsing would not
    with pytest.raises(InputError, match="open_clip found no weights for it"):
        load_model(unchecked)
    model = load_model(f"openclip:local-dir:{folder}@random")
    assert model.text_features(["a dog"]).shape[0] == 1
