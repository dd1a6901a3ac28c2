"""The evaluation scripts run as a user runs them, on tiny offline models: metrics
against a plain per-pair computation, SigLIP padding, truncated and trivial texts, the
cache across scripts and runs (resume, damage), seeded bootstrap intervals, skipped
images, input errors, --limit, precision, the config block and the sanity check."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lgip.cli import run_cli
from lgip.io import file_sha256
from lgip.models.openclip import OpenClipModel
from tests.helpers import (REPO, TOL, PlainEncoder, cache_files, plain_lgip, read_jsonl, run_multi, run_script,
                           without_timings, write_jsonl)

RELEASE_MULTI_KEYS = ["model_tag", "num_samples", "num_invariance_pairs", "num_sensitivity_pairs",
                      "invariance_error_mean", "sensitivity_gap_mean", "sensitivity_pos_rate"]


# --- metrics against the plain computation -----------------------------------------

@pytest.mark.parametrize("model", ["openclip", "siglip"])
def test_multi_metrics_equal_plain_per_pair_computation(tiny, default_multi_run, model):
    spec = getattr(tiny, model)
    metrics, _ = default_multi_run(spec)
    plain = plain_lgip(spec, tiny.perturb)
    assert list(metrics)[:7] == RELEASE_MULTI_KEYS
    assert metrics["num_samples"] == 16
    for key, value in plain.items():
        assert metrics[key] == pytest.approx(value, abs=TOL), key


def test_siglip_longest_padding_reproduces_the_release_batches(tiny, tmp_path):
    metrics, _ = run_multi(tiny, tiny.siglip, tmp_path, "--siglip-padding", "longest")
    plain = plain_lgip(tiny.siglip, tiny.perturb, longest=True)
    for key, value in plain.items():
        assert metrics[key] == pytest.approx(value, abs=TOL), key
    default = plain_lgip(tiny.siglip, tiny.perturb)
    assert abs(default["invariance_error_mean"] - plain["invariance_error_mean"]) > 1e-4  # the padding matters
    assert metrics["config"]["model_settings"]["padding"] == "longest"


def test_fliptype_metrics_and_release_keys(tiny, tmp_path):
    result = run_script("run_lgip_by_fliptype.py", "--input", tiny.fliptypes, "--models", tiny.openclip,
                        "--output-dir", tmp_path, "--quiet", "--bootstrap", 0)
    assert result.returncode == 0, result.stderr
    [metrics] = json.load(open(tmp_path / "base_fliptypes__LGIP_fliptypes.metrics.json"))
    assert list(metrics)[:5] == ["model_tag", "num_samples", "invariance_error_mean", "global_sensitivity", "by_flip_type"]
    assert list(metrics["by_flip_type"])[:3] == ["color", "number", "object"]
    encoder = PlainEncoder(tiny.openclip)
    gaps = {"color": [], "number": [], "object": []}
    for record in read_jsonl(tiny.fliptypes):
        image = encoder.image(os.path.join(os.path.dirname(tiny.fliptypes), record["image_path"]))
        for index, caption in enumerate(record["orig_captions"]):
            base = float(image @ encoder.texts([caption])[0])
            for flip_type in gaps:
                for text in record[f"diff_caps_{flip_type}"][str(index)]:
                    gaps[flip_type].append(base - float(image @ encoder.texts([text])[0]))
    for flip_type, values in gaps.items():
        summary = metrics["by_flip_type"][flip_type]
        assert summary["count"] == len(values)
        if values:
            assert summary["gap_mean"] == pytest.approx(np.mean(values), abs=TOL)
            assert summary["pos_rate"] == pytest.approx(np.mean(np.array(values) > 0), abs=TOL)
        else:
            assert summary == {"gap_mean": None, "pos_rate": None, "count": 0}
    all_gaps = sum(gaps.values(), [])
    assert metrics["global_sensitivity"]["count"] == len(all_gaps)
    assert metrics["global_sensitivity"]["gap_mean"] == pytest.approx(np.mean(all_gaps), abs=TOL)


def test_strength_analysis_against_plain_computation(tiny, tmp_path):
    result = run_script("rebuttal_enhanced_lgip_by_transformation.py", "--input", tiny.enhanced, "--models",
                        tiny.openclip, "--output-dir", tmp_path, "--quiet", "--bootstrap", 0)
    assert result.returncode == 0, result.stderr
    [analysis] = json.load(open(tmp_path / "base_enhanced__ENHANCED_LGIP_analysis.json"))
    for key in ["model_tag", "num_samples", "global_invariance_error_mean", "paraphrase_simple_inv_error_mean",
                "paraphrase_advanced_inv_error_mean", "paraphrase_simple_count", "paraphrase_advanced_count",
                "global_sensitivity", "global_strength", "global_weighted_sensitivity", "error_type_stats"]:
        assert key in analysis
    prior = {"color": 0.25, "number": 0.55, "object": 1.0}
    encoder = PlainEncoder(tiny.openclip)
    flips, combined, invariance, simple = [], [], [], []
    for record in read_jsonl(tiny.enhanced):
        image = encoder.image(os.path.join(os.path.dirname(tiny.enhanced), record["image_path"]))
        for index, caption in enumerate(record["orig_captions"]):
            caption_embedding = encoder.texts([caption])[0]
            base = float(image @ caption_embedding)
            for text, kind in zip(record["same_caps"][str(index)], record["same_caps_kind"][str(index)]):
                invariance.append(abs(base - float(image @ encoder.texts([text])[0])))
                simple.append(kind in ("template", "prefix"))
            typed = [(t, ft) for ft in prior for t in record[f"diff_caps_{ft}"][str(index)]]
            typed += [(item["text"], item["combined_type"]) for item in record["combined_caps"][str(index)]]
            for text, flip_type in typed:
                embedding = encoder.texts([text])[0]
                distance = min(1.0, max(0.0, 1.0 - float(caption_embedding @ embedding)))
                strength = min(1.0, max(0.0, 0.5 * prior.get(flip_type, 0.6) + 0.5 * distance))
                entry = (flip_type, base - float(image @ embedding), strength)
                (combined if flip_type.startswith("para+") else flips).append(entry)
    invariance, simple = np.array(invariance), np.array(simple)
    assert analysis["num_samples"] == 16
    assert analysis["global_invariance_error_mean"] == pytest.approx(invariance.mean(), abs=TOL)
    assert analysis["paraphrase_simple_inv_error_mean"] == pytest.approx(invariance[simple].mean(), abs=TOL)
    assert analysis["paraphrase_simple_count"] == int(simple.sum())
    gaps = np.array([g for _, g, _ in flips])
    strengths = np.array([s for _, _, s in flips])
    weights = np.maximum(1e-4, strengths)
    assert analysis["global_sensitivity"]["count"] == len(flips)  # each flip once, not twice as the release
    assert analysis["global_sensitivity"]["gap_mean"] == pytest.approx(gaps.mean(), abs=TOL)
    assert analysis["global_sensitivity"]["gap_std"] == pytest.approx(gaps.std(ddof=1), abs=TOL)
    assert analysis["global_strength"]["q_low"] == pytest.approx(np.quantile(strengths, 0.25), abs=TOL)
    assert analysis["global_weighted_sensitivity"]["w_gap_mean"] == pytest.approx((gaps * weights).sum() / weights.sum(), abs=TOL)
    q_low, q_high = np.quantile(strengths, [0.25, 0.75])
    for flip_type in ["color", "object"]:
        of_type = [(g, s) for t, g, s in flips if t == flip_type]
        strong = [g for g, s in of_type if s > q_high]
        weak = [g for g, s in of_type if s <= q_low]
        stats = analysis["error_type_stats"][flip_type]
        assert stats["overall"]["count"] == len(of_type)
        assert stats["strong"]["count"] == len(strong) and stats["weak"]["count"] == len(weak)
        if strong:
            assert stats["strong"]["gap_mean"] == pytest.approx(np.mean(strong), abs=TOL)
    combined_gaps = [g for t, g, _ in combined if t == "para+object"]
    assert combined_gaps, "the tiny set should have combined object edits"
    assert analysis["error_type_stats"]["para+object"]["overall"]["gap_mean"] == pytest.approx(np.mean(combined_gaps), abs=TOL)


def test_truncated_texts_and_trivial_paraphrases_are_counted(tiny, tmp_path):
    long_caption = " ".join(["a red dog and a blue cat"] * 20)
    record = {"image_path": os.path.relpath(tiny.images[0], tmp_path), "orig_captions": [long_caption, "a dog"],
              "same_caps": {"0": [], "1": ["a dog ", "A DOG", "a photo of a dog"]}, "diff_caps": {"1": ["a cat"]}}
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(record) + "\n")
    metrics, _ = run_multi(tiny, tiny.openclip, tmp_path, input_path=path)
    assert metrics["num_truncated_texts"] == 1
    # CLIP's tokenizer lower-cases and ignores trailing white space: two paraphrases are the caption itself
    assert metrics["num_trivially_invariant_pairs"] == 2


# --- cache -----------------------------------------------------------------------------

def test_second_script_encodes_nothing_new(tiny, tmp_path):
    cache = tmp_path / "cache"
    run_multi(tiny, tiny.openclip, tmp_path, "--cache-dir", cache, input_path=tiny.fliptypes)
    before = cache_files(cache, "texts") + cache_files(cache, "images")
    result = run_script("run_lgip_by_fliptype.py", "--input", tiny.fliptypes, "--models", tiny.openclip,
                        "--output-dir", tmp_path, "--quiet", "--cache-dir", cache, "--bootstrap", 0)
    assert result.returncode == 0, result.stderr
    assert cache_files(cache, "texts") + cache_files(cache, "images") == before


def assert_equal_up_to_rounding(left, right, tolerance=1e-6):
    """Nested metric dicts equal, floats within `tolerance`."""
    if isinstance(left, float) and isinstance(right, float):
        assert left == pytest.approx(right, abs=tolerance)
    elif isinstance(left, dict) and isinstance(right, dict):
        assert list(left) == list(right)
        for key in left:
            assert_equal_up_to_rounding(left[key], right[key], tolerance)
    elif isinstance(left, list) and isinstance(right, list):
        assert len(left) == len(right)
        for a, b in zip(left, right):
            assert_equal_up_to_rounding(a, b, tolerance)
    else:
        assert left == right


def test_interrupted_run_resumes_to_the_same_numbers(tiny, tmp_path, monkeypatch):
    """A run killed while encoding texts keeps what it finished and a rerun completes it.
    The texts go through prefix-shared chunks (the default), cut small here so that the
    kill lands half way; a chunk of the rerun holds other texts than the uninterrupted
    run's did, which moves embeddings by float rounding only (about 1e-7)."""
    import run_lgip_multi

    import lgip.engine.embed

    uninterrupted, _ = run_multi(tiny, tiny.openclip, tmp_path / "clean", "--no-cache")
    cache = tmp_path / "cache"
    calls = {"n": 0}
    original = OpenClipModel.encode_token_rows

    def stop_half_way(self, token_rows):
        calls["n"] += 1
        if calls["n"] > 6:
            raise KeyboardInterrupt  # what a kill does to the run: it stops mid-chunk
        return original(self, token_rows)

    monkeypatch.setattr(OpenClipModel, "encode_token_rows", stop_half_way)
    monkeypatch.setattr(lgip.engine.embed, "PREFIX_CHUNK_ROWS", 16)
    monkeypatch.setattr(sys, "argv", ["run_lgip_multi.py", "--input", str(tiny.perturb), "--models", tiny.openclip,
                                      "--output-dir", str(tmp_path / "killed"), "--cache-dir", str(cache), "--quiet",
                                      "--bootstrap", "200", "--cache-shard-rows", "32"])
    with pytest.raises(SystemExit) as stopped:
        run_cli(run_lgip_multi.main)
    assert stopped.value.code == 130 and calls["n"] == 7
    kept = cache_files(cache, "texts")
    assert 1 <= len(kept) < 10
    assert not (tmp_path / "killed").exists() or not any((tmp_path / "killed").iterdir())
    monkeypatch.undo()
    resumed, _ = run_multi(tiny, tiny.openclip, tmp_path / "killed", "--cache-dir", cache)
    assert_equal_up_to_rounding(without_timings(resumed), without_timings(uninterrupted))


def test_damaged_cache_is_rebuilt_not_trusted(tiny, tmp_path):
    cache = tmp_path / "cache"
    first, _ = run_multi(tiny, tiny.openclip, tmp_path, "--cache-dir", cache)
    [shard] = cache_files(cache, "texts")[:1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    second, result = run_multi(tiny, tiny.openclip, tmp_path, "--cache-dir", cache)
    assert "is damaged" in result.stderr
    assert without_timings(second) == without_timings(first)


# --- bootstrap -----------------------------------------------------------------------

def test_bootstrap_is_seeded_and_in_the_metric_file(tiny, tmp_path):
    first, _ = run_multi(tiny, tiny.openclip, tmp_path / "a", "--seed", "3")
    second, _ = run_multi(tiny, tiny.openclip, tmp_path / "b", "--seed", "3")
    assert first["ci95"] == second["ci95"]
    for key in ["invariance_error_mean", "sensitivity_gap_mean", "sensitivity_pos_rate"]:
        low, high = first["ci95"][key]
        assert low <= first[key] <= high


# --- images, input errors, precision, config ----------------------------------------

def test_missing_image_is_skipped_and_counted_or_an_error_with_strict(tiny, tmp_path):
    records = read_jsonl(tiny.perturb)
    records[3]["image_path"] = "images/does_not_exist.jpg"
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    records[5]["image_path"] = "images/broken.jpg"
    for record in records:
        if record["image_path"].startswith("images/img"):
            shutil.copy(os.path.join(os.path.dirname(tiny.perturb), record["image_path"]), tmp_path / "images")
    path = write_jsonl(tmp_path / "with_missing.jsonl", records)
    metrics, result = run_multi(tiny, tiny.openclip, tmp_path, input_path=path)
    assert metrics["num_samples"] == 14 and metrics["num_skipped_images"] == 2
    assert {item["line"] for item in metrics["skipped_images"]} == {4, 6}
    assert "warning:" in result.stderr and "with_missing.jsonl:4" in result.stderr
    strict = run_script("run_lgip_multi.py", "--input", path, "--models", tiny.openclip, "--output-dir", tmp_path / "s",
                        "--quiet", "--strict")
    assert strict.returncode == 2 and "with_missing.jsonl:4" in strict.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("content,expected", [
    (b'{"image_path": "a.jpg", "orig_captions": ["a dog"]}\n{broken\n', ":2: not valid JSON"),
    (b'{"orig_captions": ["a dog"]}\n', ":1: record has no 'image_path'"),
    (b'{"image_path": "a.jpg", "orig_captions": ["a dog"], "same_caps": {"0": "a cat"}}\n', "'same_caps'['0'] must be a list"),
    (b"", "holds no records"),
    (b'{"image_path": "a.jpg", "orig_captions": ["a dog"]}\n', "none of the 1 images could be read"),
])
def test_bad_jsonl_is_one_clear_error(tiny, tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    result = run_script("run_lgip_multi.py", "--input", path, "--models", tiny.openclip, "--quiet")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and expected in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


EVALUATION_SCRIPTS = ["run_lgip_multi", "run_lgip_by_fliptype", "rebuttal_enhanced_lgip_by_transformation",
                      "run_compositional", "run_semantic_certification", "run_embedding_matching",
                      "siglip_sanity_check"]


def test_evaluation_scripts_check_their_flags_without_importing_torch():
    # A typo in a flag or a file is reported in a fraction of a second, not after torch's import.
    program = ("import importlib, sys\n"
               f"for name in {EVALUATION_SCRIPTS!r}:\n"
               "    importlib.import_module(name)\n"
               "print(sorted({'torch', 'open_clip', 'transformers'} & set(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=str(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bad_model_spec_is_a_clear_error(tiny, tmp_path):
    result = run_script("run_lgip_multi.py", "--input", tiny.perturb, "--models", "clip-vit-b", "--quiet")
    assert result.returncode == 2 and "not understood" in result.stderr
    result = run_script("run_lgip_multi.py", "--input", tiny.perturb, "--models", f"openclip:local-dir:{tmp_path}/nope")
    assert result.returncode == 2 and f"{tmp_path}/nope: no such folder" in result.stderr


def test_limit_evaluates_the_first_records(tiny, tmp_path):
    result = run_script("run_lgip_multi.py", "--input", tiny.perturb, "--models", tiny.openclip, "--output-dir", tmp_path,
                        "--quiet", "--bootstrap", 0, "--limit", 4, check=True)
    [path] = tmp_path.glob("base_perturb__limit4__LGIP_openclip*.metrics.json")  # never the full run's name
    metrics = json.loads(path.read_text())
    assert metrics["num_samples"] == 4 and metrics["config"]["limit"] == 4 and str(path) in result.stdout


def test_fp16_and_bf16_stay_close_to_fp32(tiny, default_multi_run, tmp_path):
    reference, _ = default_multi_run(tiny.openclip)
    assert reference["config"]["precision"] == "fp32"
    for precision, tolerance in [("fp16", 2e-3), ("bf16", 2e-2)]:
        metrics, _ = run_multi(tiny, tiny.openclip, tmp_path / precision, "--precision", precision, "--bootstrap", 0)
        assert metrics["config"]["precision"] == precision
        for key in ["invariance_error_mean", "sensitivity_gap_mean"]:
            assert metrics[key] == pytest.approx(reference[key], abs=tolerance), (precision, key)


def test_config_block_records_how_the_file_was_made(tiny, default_multi_run):
    metrics, _ = default_multi_run(tiny.siglip)
    config = metrics["config"]
    assert config["spec"] == tiny.siglip and config["backend"] == "hf"
    assert config["model_settings"]["padding"] == "max_length" and config["model_settings"]["max_length"] == 64
    assert config["input_sha256"] == file_sha256(tiny.perturb)
    assert config["versions"]["torch"] and config["versions"]["transformers"]
    assert set(config["timings_seconds"]) >= {"load_model", "images", "texts", "metrics"}


def test_sanity_check_prints_seeded_examples_side_by_side(tiny):
    args = ["--input", tiny.perturb, "--model", tiny.siglip, "--num-examples", 3, "--compare-padding"]
    first = run_script("siglip_sanity_check.py", *args)
    assert first.returncode == 0, first.stderr
    assert "[Sample 3]" in first.stdout and "[Sample 4]" not in first.stdout
    assert "max_length |    longest" in first.stdout and "- FLIP:" in first.stdout
    assert run_script("siglip_sanity_check.py", *args).stdout == first.stdout
    other_seed = run_script("siglip_sanity_check.py", *args, "--seed", 7)
    assert other_seed.stdout != first.stdout
