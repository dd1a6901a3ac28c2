"""Where a spec's weights come from without loading it (lgip/models/weights.py): local
folders and checkpoint files, and Hugging Face hub repos through the local cache
(transformers ids, open_clip's hf-hub: names and pretrained tags), with a state that
changes when a file or the hub's revision pointer does. The hub cache here is a fake
one in a temporary folder: nothing is downloaded."""
import os

import pytest

from lgip.models import parse_spec
from lgip.models.weights import weight_sources, weights_state


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A fake Hugging Face cache; `add(repo_id, revision, files)` puts a snapshot in it."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def add(repo_id, revision, files):
        repo = tmp_path / "hub" / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        snapshot = repo / "snapshots" / revision
        snapshot.mkdir(parents=True)
        for name in files:
            (snapshot / name).write_bytes(b"weights of " + name.encode())
        return repo, snapshot

    return add


def test_hub_repos_are_found_in_the_cache_and_a_new_revision_is_noticed(hub_cache):
    repo, snapshot = hub_cache("org/tiny-clip", "a" * 40, ["model.safetensors", "config.json"])
    sources = weight_sources(parse_spec("hf:org/tiny-clip"))
    assert sources == {"folders": [str(snapshot)], "files": [], "refs": [str(repo / "refs" / "main")]}
    state = weights_state(sources)
    assert sorted(os.path.basename(path) for path in state["files"]) == ["config.json", "model.safetensors"]
    assert weights_state(sources) == state
    (repo / "refs" / "main").write_text("b" * 40)  # a newer revision was downloaded
    assert weights_state(sources) != state
    assert weight_sources(parse_spec("hf:org/not-downloaded")) is None


def test_open_clip_tags_and_hub_names_resolve_to_their_repos(hub_cache):
    _, tagged = hub_cache("timm/vit_base_patch32_clip_224.openai", "c" * 40, ["open_clip_pytorch_model.bin"])
    assert weight_sources(parse_spec("openclip:ViT-B-32@openai"))["folders"] == [str(tagged)]
    _, named = hub_cache("laion/some-model", "d" * 40, ["open_clip_model.safetensors"])
    assert weight_sources(parse_spec("openclip:hf-hub:laion/some-model"))["folders"] == [str(named)]
    assert weight_sources(parse_spec("openclip:ViT-B-32@random")) is None  # random weights: nothing to record


def test_local_folders_and_checkpoints(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{}")
    (folder / "open_clip_model.safetensors").write_bytes(b"12345")
    sources = weight_sources(parse_spec(f"openclip:local-dir:{folder}"))
    state = weights_state(sources)
    assert state["files"][str(folder / "open_clip_model.safetensors")][0] == 5
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"x")  # a file the loader might prefer appears
    assert weights_state(sources) != state
    assert weight_sources(parse_spec(f"openclip:local-dir:{folder}@random")) is None
    checkpoint = tmp_path / "epoch_3.pt"
    checkpoint.write_bytes(b"abc")
    sources = weight_sources(parse_spec(f"openclip:ViT-B-32@{checkpoint}"))
    assert sources["files"] == [str(checkpoint)] and weights_state(sources)["files"][str(checkpoint)][0] == 3
    checkpoint.unlink()
    assert weights_state(sources)["files"][str(checkpoint)] == [None, None]
    assert weight_sources(parse_spec(f"hf:{folder}"))["folders"] == [str(folder)]
