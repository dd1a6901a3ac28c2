"""Model specs and the backend registry: parsing, the release's tags, which backend a
prefix loads, the errors a user sees, and that a transformers spec never imports
open_clip."""
import importlib
import subprocess
import sys

import pytest

from lgip.io import InputError
from lgip.models import BACKENDS, PAPER_MODELS, PRECISIONS, load_model, parse_spec
from lgip.models.base import VisionLanguageModel
from lgip.models.device import resolve_device
from tests.helpers import REPO


def test_paper_model_tags_are_the_releases():
    assert [parse_spec(spec).tag for spec in PAPER_MODELS][::4] == [
        "openclip_ViT-B-16_openai", "openclip_EVA02-L-14_merged2b_s4b_b131k", "siglip2_google_siglip2-base-patch16-224"]
    assert parse_spec("openclip:ViT-B-32@laion2b_s34b_b79k").tag == "openclip_ViT-B-32_laion2b_s34b_b79k"
    assert parse_spec("hf:google/siglip-so400m-patch14-384").tag == "siglip_google_siglip-so400m-patch14-384"


def test_spec_parts_and_malformed_specs(tmp_path):
    checkpoint = tmp_path / "ckpt" / "epoch@3.pt"  # the first '@' splits, so a path may hold one
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    spec = parse_spec(f"openclip:ViT-B-32@{checkpoint}")
    assert (spec.backend, spec.name, spec.pretrained) == ("openclip", "ViT-B-32", str(checkpoint))
    assert parse_spec("openclip:ViT-B-32@random").pretrained == "random"  # random weights only when asked for
    with pytest.raises(InputError, match="names no weights"):
        parse_spec("openclip:ViT-B-32")
    with pytest.raises(InputError, match="ignores @3.pt for local-dir: models"):
        parse_spec("openclip:local-dir:/models/tiny@/ckpt/epoch@3.pt")
    folder = tmp_path / "models" / "tiny"
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text("{}")
    (folder / "open_clip_model.safetensors").write_bytes(b"")
    assert parse_spec(f"openclip:local-dir:{folder}").tag == "openclip_models_tiny"
    assert (parse_spec("hf:google/siglip-base-patch16-224").backend, parse_spec("hf:x").name) == ("hf", "x")
    with pytest.raises(InputError, match="nothing before '@'"):
        parse_spec("openclip:@openai")
    for bad in ["clip-vit-b", "openclip:", "hf:", "torch:resnet"]:
        with pytest.raises(InputError, match="not understood"):
            parse_spec(bad)


def test_backend_registry_maps_each_spec_prefix_to_its_backend():
    assert set(BACKENDS) == {"openclip", "hf"}
    for prefix, target in BACKENDS.items():
        module_name, class_name = target.split(":")
        backend = getattr(importlib.import_module(module_name), class_name)
        assert issubclass(backend, VisionLanguageModel) and backend.backend == prefix
        assert parse_spec(f"{prefix}:some-model" + ("@random" if prefix == "openclip" else "")).backend == prefix


def test_unknown_precision_is_refused_before_anything_loads():
    assert PRECISIONS[:3] == ("fp32", "fp16", "bf16")
    # The folder does not exist, which the spec's own check would have said next.
    with pytest.raises(InputError) as raised:
        load_model("hf:/nonexistent/model", "cpu", "fp64")
    assert str(raised.value) == "--precision 'fp64': expected one of " + ", ".join(PRECISIONS)
    with pytest.raises(InputError, match="/nonexistent/model: no such folder"):
        load_model("hf:/nonexistent/model", "cpu", "fp32")


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    for bad in ["tpu", "cuda:x", "gpu0"]:
        with pytest.raises(InputError, match=f"--device .?{bad}"):
            resolve_device(bad)


def test_a_transformers_spec_never_imports_open_clip(tiny_models):
    # A fresh interpreter, as a script run of SigLIP models only would be.
    program = ("import sys\n"
               "from lgip.models import load_model\n"
               "model = load_model(sys.argv[1])\n"
               "assert model.backend == 'hf' and model.text_features(['a dog']).shape == (1, 32)\n"
               "loaded = sorted(name for name in sys.modules if name.split('.')[0] == 'open_clip')\n"
               "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", program, tiny_models.siglip], capture_output=True, text=True,
                            cwd=str(REPO))
    assert result.returncode == 0, result.stderr
