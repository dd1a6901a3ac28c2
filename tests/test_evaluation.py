"""The evaluation engine and scripts on tiny offline models: metrics against a plain
per-pair computation, exact padding trimming, SigLIP padding, the cache, bootstrap
intervals, skipped images, precision, and the release's keys."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

import lgip_common
from conftest import run_script

TOL = 1e-5
RELEASE_MULTI_KEYS = ["model_tag", "num_samples", "num_invariance_pairs", "num_sensitivity_pairs",
                      "invariance_error_mean", "sensitivity_gap_mean", "sensitivity_pos_rate"]


# --- a plain reference: one image, one text at a time, loops over pairs ------------

class PlainEncoder:
    """Encodes one image or one text per call, straight through the libraries, the way
    a reader would check a number by hand. `group_padding` mimics the release's SigLIP
    calls (padding to the longest text of the texts encoded together)."""

    def __init__(self, spec):
        self.kind, self.name = spec.split(":", 1)
        if self.kind == "openclip":
            import open_clip
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(self.name)
            self.tokenizer = open_clip.get_tokenizer(self.name)
        else:
            from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
            self.model = AutoModel.from_pretrained(self.name)
            self.tokenizer = AutoTokenizer.from_pretrained(self.name)
            self.processor = AutoImageProcessor.from_pretrained(self.name)
        self.model.eval()

    @staticmethod
    def _unit(features):
        features = features if torch.is_tensor(features) else features.pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def image(self, path):
        from PIL import Image
        image = Image.open(path).convert("RGB")
        if self.kind == "openclip":
            return self._unit(self.model.encode_image(self.preprocess(image)[None]))[0]
        return self._unit(self.model.get_image_features(**self.processor(images=image, return_tensors="pt")))[0]

    @torch.no_grad()
    def texts(self, texts, longest=False):
        if self.kind == "openclip":
            return self._unit(self.model.encode_text(self.tokenizer(texts)))
        if longest:
            inputs = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            return self._unit(self.model.get_text_features(**inputs))
        rows = [self.tokenizer([t], padding="max_length", max_length=64, truncation=True, return_tensors="pt")
                for t in texts]
        return torch.cat([self._unit(self.model.get_text_features(**row)) for row in rows])


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def plain_lgip(spec, jsonl, longest=False):
    """The release's metrics computed pair by pair."""
    encoder = PlainEncoder(spec)
    folder = os.path.dirname(jsonl)
    invariance, gaps = [], []
    for record in read_jsonl(jsonl):
        image = encoder.image(os.path.join(folder, record["image_path"]))
        captions = encoder.texts(record["orig_captions"], longest)
        for index, caption in enumerate(captions):
            base = float(image @ caption)
            for key, sink in [("same_caps", invariance), ("diff_caps", gaps)]:
                texts = record[key][str(index)]
                if texts:
                    for variant in encoder.texts(texts, longest):
                        score = float(image @ variant)
                        sink.append(abs(base - score) if key == "same_caps" else base - score)
    return {"invariance_error_mean": np.mean(invariance), "sensitivity_gap_mean": np.mean(gaps),
            "sensitivity_pos_rate": np.mean(np.array(gaps) > 0), "num_invariance_pairs": len(invariance),
            "num_sensitivity_pairs": len(gaps)}


def run_multi(tiny, spec, out, *extra, input_path=None):
    result = run_script("run_lgip_multi.py", "--input", input_path or tiny.perturb, "--models", spec,
                        "--output-dir", out, "--quiet", "--bootstrap", 200, *extra)
    assert result.returncode == 0, result.stderr
    stem = os.path.splitext(os.path.basename(input_path or tiny.perturb))[0]
    tag = lgip_common.parse_spec(spec).tag
    return json.load(open(out / f"{stem}__LGIP_{tag}.metrics.json")), result


def without_timings(metrics):
    metrics = json.loads(json.dumps(metrics))
    for entry in metrics if isinstance(metrics, list) else [metrics]:
        entry["config"].pop("timings_seconds")
        entry["config"].pop("cache")
    return metrics


# --- metrics against the plain computation -----------------------------------------

@pytest.mark.parametrize("model", ["openclip", "siglip"])
def test_multi_metrics_equal_plain_per_pair_computation(tiny, tmp_path, model):
    spec = getattr(tiny, model)
    metrics, _ = run_multi(tiny, spec, tmp_path)
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


# --- encoding details ---------------------------------------------------------------

def test_trimmed_text_encoding_equals_full_padding(tiny):
    model = lgip_common.load_model(tiny.openclip)
    assert model.trims_padding
    texts = ["a dog", "A man riding a horse down a long and winding dusty road at sunset.", "two red cars"]
    tokens = model.tokenize(texts)
    full = model.encode_tokens(tokens.ids, tokens.lengths)
    cut = int(tokens.lengths.max())
    trimmed = model.encode_tokens(tokens.ids[:, :cut], tokens.lengths)
    assert cut < tokens.ids.shape[1]
    assert torch.allclose(full, trimmed, atol=TOL)
    reference = PlainEncoder(tiny.openclip).texts(texts)
    assert torch.allclose(full, reference, atol=TOL)


def test_siglip_text_embedding_ignores_batch_mates_only_under_max_length(tiny):
    text, mates = "a red car", ["a man riding a horse down the long street next to a building"]
    for padding, should_match in [("max_length", True), ("longest", False)]:
        model = lgip_common.load_model(tiny.siglip, siglip_padding=padding)
        plan = lgip_common.PairPlan()
        plan.add_record(1, "x.jpg", [text, mates[0]], [[], []])
        plan.add_record(2, "y.jpg", [text], [[]])
        plan.finish()
        tokens = lgip_common.tokenize_all(model, plan.texts, progress=False)
        caption_unit, _, unit_text, unit_width = lgip_common.text_units(plan, tokens, padding == "longest")
        store = lgip_common.ShardStore(None, "texts", 10)
        embeddings = lgip_common.encode_text_units(model, plan.texts, tokens, unit_text, unit_width, store, 8, False)
        alone, with_mate = embeddings[caption_unit[2]], embeddings[caption_unit[0]]
        assert np.allclose(alone, with_mate, atol=TOL) == should_match, padding


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

def cache_files(cache, kind):
    return sorted(p for p in cache.rglob(f"{kind}-*.npz"))


def test_second_script_encodes_nothing_new(tiny, tmp_path):
    cache = tmp_path / "cache"
    run_multi(tiny, tiny.openclip, tmp_path, "--cache-dir", cache, input_path=tiny.fliptypes)
    before = cache_files(cache, "texts") + cache_files(cache, "images")
    result = run_script("run_lgip_by_fliptype.py", "--input", tiny.fliptypes, "--models", tiny.openclip,
                        "--output-dir", tmp_path, "--quiet", "--cache-dir", cache, "--bootstrap", 0)
    assert result.returncode == 0, result.stderr
    assert cache_files(cache, "texts") + cache_files(cache, "images") == before


def test_interrupted_run_resumes_to_the_same_numbers(tiny, tmp_path, monkeypatch):
    import run_lgip_multi

    uninterrupted, _ = run_multi(tiny, tiny.openclip, tmp_path / "clean", "--no-cache", "--text-batch-size", 16)
    cache = tmp_path / "cache"
    calls = {"n": 0}
    original = lgip_common.OpenClipModel.encode_tokens

    def stop_half_way(self, ids, lengths):
        calls["n"] += 1
        if calls["n"] > 6:
            raise KeyboardInterrupt  # what a kill does to the run: it stops mid-batch
        return original(self, ids, lengths)

    monkeypatch.setattr(lgip_common.OpenClipModel, "encode_tokens", stop_half_way)
    monkeypatch.setattr(sys, "argv", ["run_lgip_multi.py", "--input", str(tiny.perturb), "--models", tiny.openclip,
                                      "--output-dir", str(tmp_path / "killed"), "--cache-dir", str(cache), "--quiet",
                                      "--bootstrap", "200", "--text-batch-size", "16", "--cache-shard-rows", "32"])
    with pytest.raises(SystemExit) as stopped:
        lgip_common.run_cli(run_lgip_multi.main)
    assert stopped.value.code == 130
    kept = cache_files(cache, "texts")
    assert 1 <= len(kept) < 10
    assert not (tmp_path / "killed").exists() or not any((tmp_path / "killed").iterdir())
    monkeypatch.undo()
    resumed, _ = run_multi(tiny, tiny.openclip, tmp_path / "killed", "--cache-dir", cache, "--text-batch-size", 16)
    assert without_timings(resumed) == without_timings(uninterrupted)


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

def test_bootstrap_interval_contains_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    widths = []
    for records in (50, 800):
        values = rng.normal(0.3, 0.1, size=records * 6)
        owners = np.repeat(np.arange(records), 6)
        bootstrap = lgip_common.Bootstrap(records, 500, seed=0)
        bootstrap.add("mean", values, owners)
        low, high = bootstrap.intervals()["mean"]
        assert low < values.mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


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
    path = tmp_path / "with_missing.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
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


def test_bad_model_spec_is_a_clear_error(tiny, tmp_path):
    result = run_script("run_lgip_multi.py", "--input", tiny.perturb, "--models", "clip-vit-b", "--quiet")
    assert result.returncode == 2 and "not understood" in result.stderr
    result = run_script("run_lgip_multi.py", "--input", tiny.perturb, "--models", f"openclip:local-dir:{tmp_path}/nope")
    assert result.returncode == 2 and "could not load" in result.stderr


def test_limit_evaluates_the_first_records(tiny, tmp_path):
    metrics, _ = run_multi(tiny, tiny.openclip, tmp_path, "--limit", 4)
    assert metrics["num_samples"] == 4 and metrics["config"]["limit"] == 4


def test_fp16_and_bf16_stay_close_to_fp32(tiny, tmp_path):
    reference, _ = run_multi(tiny, tiny.openclip, tmp_path / "fp32", "--bootstrap", 0)
    for precision, tolerance in [("fp16", 2e-3), ("bf16", 2e-2)]:
        metrics, _ = run_multi(tiny, tiny.openclip, tmp_path / precision, "--precision", precision, "--bootstrap", 0)
        assert metrics["config"]["precision"] == precision
        for key in ["invariance_error_mean", "sensitivity_gap_mean"]:
            assert metrics[key] == pytest.approx(reference[key], abs=tolerance), (precision, key)


def test_config_block_records_how_the_file_was_made(tiny, tmp_path):
    metrics, _ = run_multi(tiny, tiny.siglip, tmp_path)
    config = metrics["config"]
    assert config["spec"] == tiny.siglip and config["backend"] == "hf"
    assert config["model_settings"]["padding"] == "max_length" and config["model_settings"]["max_length"] == 64
    assert config["input_sha256"] == lgip_common.file_sha256(tiny.perturb)
    assert config["versions"]["torch"] and config["versions"]["transformers"]
    assert set(config["timings_seconds"]) >= {"load_model", "images", "texts", "metrics"}


def test_paper_model_tags_are_the_releases():
    assert [lgip_common.parse_spec(spec).tag for spec in lgip_common.PAPER_MODELS][::4] == [
        "openclip_ViT-B-16_openai", "openclip_EVA02-L-14_merged2b_s4b_b131k", "siglip2_google_siglip2-base-patch16-224"]
    assert lgip_common.parse_spec("openclip:ViT-B-32@laion2b_s34b_b79k").tag == "openclip_ViT-B-32_laion2b_s34b_b79k"
    assert lgip_common.parse_spec("hf:google/siglip-so400m-patch14-384").tag == "siglip_google_siglip-so400m-patch14-384"


def test_sanity_check_prints_seeded_examples_side_by_side(tiny):
    args = ["--input", tiny.perturb, "--model", tiny.siglip, "--num-examples", 3, "--compare-padding"]
    first = run_script("siglip_sanity_check.py", *args)
    assert first.returncode == 0, first.stderr
    assert "[Sample 3]" in first.stdout and "[Sample 4]" not in first.stdout
    assert "max_length |    longest" in first.stdout and "- FLIP:" in first.stdout
    assert run_script("siglip_sanity_check.py", *args).stdout == first.stdout
    other_seed = run_script("siglip_sanity_check.py", *args, "--seed", 7)
    assert other_seed.stdout != first.stdout
