"""EvalSettings from an evaluation script's flags (lgip_common.evaluation_arguments on
a script's constants): every field from its flag or constant, and the cache folder:
beside the input by default, none with --no-cache, an explicit --cache-dir kept."""
import os

import pytest

from lgip.engine import EvalSettings
from lgip.engine.settings import CACHE_FOLDER_NAME
from lgip_common import evaluation_arguments

# What a script's globals() holds, with values no default has, so each must come through.
CONSTANTS = {"JSONL_PATH": "runs/base_with_perturb.jsonl", "MODELS": ["openclip:ViT-B-16@openai"], "DEVICE": "cpu",
             "PRECISION": "fp16", "BATCH_SIZE": 7, "TEXT_BATCH_SIZE": 9, "WORKERS": 3, "BOOTSTRAP": 11, "SEED": 5,
             "CACHE_SHARD_ROWS": 13}


def parse(*argv):
    return evaluation_arguments("a test script", CONSTANTS).parse_args([str(arg) for arg in argv])


def test_settings_follow_the_constants():
    settings = EvalSettings.from_args(parse())
    assert (settings.device, settings.precision, settings.batch_size, settings.text_batch_size, settings.workers,
            settings.bootstrap, settings.seed, settings.cache_shard_rows) == ("cpu", "fp16", 7, 9, 3, 11, 5, 13)
    assert (settings.strict, settings.siglip_padding, settings.progress, settings.limit) == (False, "max_length",
                                                                                            True, None)


def test_settings_follow_the_flags():
    args = parse("--device", "cuda:1", "--precision", "bf16", "--batch-size", 2, "--text-batch-size", 4,
                 "--workers", 0, "--bootstrap", 0, "--seed", 8, "--cache-shard-rows", 16, "--strict",
                 "--siglip-padding", "longest", "--quiet", "--limit", 3)
    settings = EvalSettings.from_args(args)
    assert settings == EvalSettings(device="cuda:1", precision="bf16", batch_size=2, text_batch_size=4, workers=0,
                                    cache_dir=settings.cache_dir, cache_shard_rows=16, bootstrap=0, seed=8, strict=True,
                                    siglip_padding="longest", progress=False, limit=3)


def test_default_cache_is_beside_the_input(tmp_path, monkeypatch):
    args = parse("--input", tmp_path / "runs" / "in.jsonl")
    assert EvalSettings.from_args(args).cache_dir == str(tmp_path / "runs" / CACHE_FOLDER_NAME)
    assert args.cache_dir is None  # the flags are read, never changed
    monkeypatch.chdir(tmp_path)  # a relative input: the folder beside it, made absolute
    settings = EvalSettings.from_args(parse("--input", os.path.join("runs", "in.jsonl")))
    assert settings.cache_dir == os.path.join(str(tmp_path), "runs", ".lgip_cache")


@pytest.mark.parametrize("argv", [["--no-cache"], ["--no-cache", "--cache-dir", "somewhere"]])
def test_no_cache_means_none(argv):
    assert EvalSettings.from_args(parse(*argv)).cache_dir is None


def test_an_explicit_cache_dir_is_kept_as_given():
    assert EvalSettings.from_args(parse("--cache-dir", os.path.join("rel", "cache"))).cache_dir == os.path.join(
        "rel", "cache")
