"""Warm runs: a rerun whose embeddings are all cached loads no model and imports neither
torch nor open_clip nor transformers, and writes the metric file the cold run wrote
(timings aside); a second script tokenises only the texts the cache lacks; weights
that change on disk make the run load the model again."""
import json
import os
import shutil

import pytest

import run_lgip_by_fliptype
import run_lgip_multi
from lgip.engine import EvalSettings, build_plan, evaluate_models
from lgip.models.openclip import OpenClipModel
from tests.helpers import run_multi, run_script, without_timings

HEAVY_MODULES = ("torch", "open_clip", "transformers")


@pytest.fixture(scope="module")
def cold_cache(tiny, tmp_path_factory):
    """A cache filled by one cold run_lgip_multi.py run on the tiny open_clip model, and
    that run's metric file (copy the cache before changing it)."""
    folder = tmp_path_factory.mktemp("cold")
    metrics, _ = run_multi(tiny, tiny.openclip, folder / "out", "--cache-dir", folder / "cache")
    return folder / "cache", metrics


def imported(stderr: str):
    """Top-level module names in a `python -X importtime` log."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_warm_rerun_loads_no_model_and_writes_the_same_file(tiny, cold_cache, tmp_path):
    cache, cold = cold_cache
    result = run_script("run_lgip_multi.py", "--input", tiny.perturb, "--models", tiny.openclip, "--output-dir",
                        tmp_path, "--quiet", "--bootstrap", 200, "--cache-dir", cache,
                        env_extra={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    modules = imported(result.stderr)
    assert "lgip.engine.embed" in modules and not modules & set(HEAVY_MODULES)  # the log works; none of them
    stem = os.path.splitext(os.path.basename(tiny.perturb))[0]
    warm = json.load(open(tmp_path / f"{stem}__LGIP_{cold['model_tag']}.metrics.json"))
    assert without_timings(warm) == without_timings(cold)  # config and model settings included
    assert warm["config"]["model_settings"]["prefix_sharing"] is True


def evaluate_in_process(script_module, metrics_function, input_path, spec, cache):
    settings = EvalSettings(device="cpu", workers=0, cache_dir=str(cache), bootstrap=0, progress=False)
    return list(evaluate_models(settings, [spec], str(input_path), script_module.variant_groups, metrics_function,
                                os.path.basename(script_module.__file__)))[0]


def test_second_script_tokenises_only_the_texts_the_cache_lacks(tiny, cold_cache, tmp_path, monkeypatch):
    cache = shutil.copytree(cold_cache[0], tmp_path / "cache")
    tokenised = []
    original = OpenClipModel.tokenize
    monkeypatch.setattr(OpenClipModel, "tokenize", lambda self, texts: tokenised.extend(texts) or original(self, texts))
    evaluate_in_process(run_lgip_by_fliptype, run_lgip_by_fliptype.fliptype_metrics, tiny.fliptypes, tiny.openclip,
                        cache)
    known = set(build_plan(str(tiny.perturb), run_lgip_multi.variant_groups).texts)
    new = set(build_plan(str(tiny.fliptypes), run_lgip_by_fliptype.variant_groups).texts) - known
    assert new and sorted(tokenised) == sorted(new)


def test_changed_weights_load_the_model_again(tiny, cold_cache, tmp_path, monkeypatch):
    import lgip.engine.warm as warm

    cache = shutil.copytree(cold_cache[0], tmp_path / "cache")
    loads = []
    original = warm.load_model
    monkeypatch.setattr(warm, "load_model", lambda *args, **kwargs: loads.append(args[0]) or original(*args, **kwargs))
    weights = os.path.join(tiny.openclip.split("local-dir:", 1)[1], "open_clip_model.safetensors")
    stat = os.stat(weights)
    try:
        evaluate_in_process(run_lgip_multi, run_lgip_multi.lgip_metrics, tiny.perturb, tiny.openclip, cache)
        assert loads == []  # the record matches: nothing loaded
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as a rewrite of the file leaves it
        evaluate_in_process(run_lgip_multi, run_lgip_multi.lgip_metrics, tiny.perturb, tiny.openclip, cache)
        assert len(loads) == 1
        evaluate_in_process(run_lgip_multi, run_lgip_multi.lgip_metrics, tiny.perturb, tiny.openclip, cache)
        assert len(loads) == 1  # the run that loaded it recorded the new state
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
