"""The embedding cache: shard files that round-trip rows by key, damaged shards removed
and rebuilt, and the folder key pinned to what the version before the `lgip/` split
wrote, so that caches users already have are still read (a change of the key has to
be a visible test failure, and a deliberate one). Prefix-shared text encoding (on by
default) moves embeddings by about 3e-7, so it adds one key, `prefix_sharing`, and only
where it is on: with it off the key is the pre-split one."""
import hashlib
import json

import numpy as np
import pytest

from lgip.engine import EvalSettings, PairPlan, score_plan
from lgip.engine.cache import CACHE_FORMAT, ShardStore, cache_folder, library_versions
from lgip.models import load_model
from tests.helpers import cache_files

# The model settings the cache key of an open_clip model was computed from before the
# split (lgip_common.OpenClipModel.settings() plus the device type, as score_plan added it).
PRE_SPLIT_OPENCLIP_KEYS = {"backend", "spec", "weights_fingerprint", "image_preprocess", "tokenizer", "context_length",
                           "padding", "quick_gelu_mismatch", "precision", "device"}


def pre_split_folder_name(model_tag, keyed):
    """The folder name as the version before the split computed it from the keyed settings."""
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{model_tag}-{digest}"


def keyed_settings_of_a_run(model, images, cache_dir):
    """The keyed settings and folder a run with `model` writes into `cache_dir`."""
    plan = PairPlan()
    plan.add_record(1, images[0], ["a dog"], [[[("a cat", "diff")]]])
    plan.finish()
    score_plan(model, plan, EvalSettings(device="cpu", workers=0, cache_dir=str(cache_dir), progress=False))
    [folder] = [path for path in cache_dir.iterdir() if path.is_dir() and path.name != "index"]
    return json.loads((folder / "settings.json").read_text()), folder


def test_cache_key_of_the_tiny_open_clip_model_is_the_pre_split_one(tiny_models, tmp_path):
    openclip_model = load_model(tiny_models.openclip, "cpu", "fp32", prefix_sharing=False)
    keyed, folder = keyed_settings_of_a_run(openclip_model, tiny_models.images, tmp_path)
    assert set(keyed) == {"cache_format", "settings", "versions"} and keyed["cache_format"] == CACHE_FORMAT == 1
    assert set(keyed["settings"]) == PRE_SPLIT_OPENCLIP_KEYS
    assert {key: keyed["settings"][key] for key in ["backend", "spec", "tokenizer", "context_length", "padding",
                                                    "quick_gelu_mismatch", "precision", "device"]} == {
        "backend": "openclip", "spec": tiny_models.openclip, "tokenizer": "SimpleTokenizer", "context_length": 77,
        "padding": "trimmed after the longest text (exact)", "quick_gelu_mismatch": False, "precision": "fp32",
        "device": "cpu"}
    assert keyed["versions"] == library_versions()
    tag = openclip_model.spec.tag
    assert folder.name == pre_split_folder_name(tag, keyed)
    # ...and cache_folder, what every run asks, names that folder from the model's settings.
    settings = {**openclip_model.settings(), "device": "cpu"}
    assert cache_folder(str(tmp_path), tag, settings) == (str(folder), keyed)
    assert cache_folder(None, tag, settings) == (None, None)


def test_prefix_sharing_adds_one_key_to_the_cache_folder(tiny_models, openclip_model, tmp_path):
    assert openclip_model.prefix_sharing  # on by default
    keyed, folder = keyed_settings_of_a_run(openclip_model, tiny_models.images, tmp_path)
    assert set(keyed["settings"]) == PRE_SPLIT_OPENCLIP_KEYS | {"prefix_sharing"} and keyed["settings"]["prefix_sharing"]
    without = {key: value for key, value in keyed["settings"].items() if key != "prefix_sharing"}
    assert folder.name != pre_split_folder_name(openclip_model.spec.tag, {**keyed, "settings": without})


def rows(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def test_shards_round_trip_rows_by_key(tmp_path):
    folder = tmp_path / "model-key"
    store = ShardStore(str(folder), "texts", shard_rows=3, settings={"made_by": "test"})
    first, second = rows(2, 0), rows(2, 1)
    store.add(["k1", "k2"], first)
    assert not folder.exists()  # fewer than shard_rows rows wait in memory
    store.add(["k3", "k4"], second)
    assert len(cache_files(folder, "texts")) == 1 and json.loads((folder / "settings.json").read_text()) == {
        "made_by": "test"}
    store.add(["k5"], rows(1, 2))
    store.flush()
    assert len(cache_files(folder, "texts")) == 2 and cache_files(folder, "images") == []
    found, matrix = ShardStore(str(folder), "texts", 3).fill(["k4", None, "k9", "k1", "k5"])
    assert found.tolist() == [True, False, False, True, True]
    assert np.array_equal(matrix[0], second[1]) and np.array_equal(matrix[3], first[0])
    assert np.isnan(matrix[1]).all() and np.isnan(matrix[2]).all()
    assert ShardStore(str(folder), "images", 3).fill(["k1"])[0].tolist() == [False]  # another kind


def test_a_damaged_shard_is_removed_and_its_rows_missing(tmp_path, capsys):
    store = ShardStore(str(tmp_path), "images", shard_rows=2)
    store.add(["a", "b"], rows(2, 0))
    store.add(["c", "d"], rows(2, 1))
    first, second = cache_files(tmp_path, "images")
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF
    second.write_bytes(bytes(data))
    reader = ShardStore(str(tmp_path), "images", 2)
    found, matrix = reader.fill(["a", "b", "c", "d"])
    assert found.tolist() == [True, True, False, False] and reader.damaged == 1
    assert cache_files(tmp_path, "images") == [first]
    assert f"cache file {second} is damaged" in capsys.readouterr().err


def test_no_folder_means_no_cache(tmp_path):
    store = ShardStore(None, "texts", shard_rows=1)
    store.add(["a"], rows(1, 0))
    store.flush()
    found, matrix = store.fill(["a"])
    assert found.tolist() == [False] and matrix is None


@pytest.mark.parametrize("changed", ["precision", "weights_fingerprint"])
def test_other_settings_get_another_folder(openclip_model, tmp_path, changed):
    settings = {**openclip_model.settings(), "device": "cpu"}
    other = {**settings, changed: "something else"}
    assert cache_folder(str(tmp_path), "m", settings)[0] != cache_folder(str(tmp_path), "m", other)[0]
