"""Compositional probes run as a user runs them: the generator (keys, determinism,
errors), run_compositional.py's metrics against a plain computation on the tiny model
(image and blind baseline), its input errors, and lgip_report.py's compositional table
and --diff."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import lgip_report
import run_compositional
from lgip.cli import metric_value
from lgip.engine import build_plan
from lgip.io import InputError
from lgip.models import parse_spec
from lgip.perturb.compositional import ORDER_TYPES
from lgip.perturb.tagger import ORDER_NORMALISATION, normalise_caption
from tests.helpers import REPO, PlainEncoder, read_jsonl, run_script, word_counts, write_jsonl

NEAR = 1e-5  # scores closer than this may order differently in two float32 computations


# --- the generator ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compositional(tiny):
    """The rebuttal generator's tiny file with the compositional keys added."""
    output = Path(tiny.root) / "data" / "base_compositional.jsonl"
    result = run_script("make_compositional_perturb.py", "--input", tiny.enhanced, "--output", output, check=True)
    return output, result


def test_generator_adds_keys_to_a_perturbed_file(tiny, compositional):
    output, result = compositional
    before, after = read_jsonl(tiny.enhanced), read_jsonl(output)
    assert len(before) == len(after) == 16
    for old, new in zip(before, after):
        assert {key: new[key] for key in old} == old  # every key kept as it was
        assert list(new)[len(old):] == ["order_orig", "order_caps", "swap_caps", "compositional_normalisation",
                                        "compositional_tagger"]
        assert new["compositional_normalisation"] == ORDER_NORMALISATION
        for index, caption in enumerate(new["orig_captions"]):
            original = new["order_orig"][str(index)]
            assert original == normalise_caption(caption)
            for shuffle in new["order_caps"][str(index)]:
                assert shuffle["order_type"] in ORDER_TYPES and shuffle["text"] != original
                assert Counter(shuffle["text"].split(" ")) == Counter(original.split(" "))
            for swap in new["swap_caps"][str(index)]:
                assert word_counts(swap["text"]) == word_counts(caption) and swap["text"] != caption.strip()
    summary = result.stdout
    assert "order shuffles:" in summary and "relation swaps:" in summary and "coverage:" in summary


def test_generator_is_deterministic_across_runs_and_hash_seeds(tiny, compositional, tmp_path):
    output, _ = compositional
    for hash_seed in ("0", "12345"):
        again = tmp_path / f"again_{hash_seed}.jsonl"
        run_script("make_compositional_perturb.py", "--input", tiny.enhanced, "--output", again,
                   env_extra={"PYTHONHASHSEED": hash_seed}, check=True)
        assert again.read_bytes() == output.read_bytes()
    other = tmp_path / "other_seed.jsonl"
    run_script("make_compositional_perturb.py", "--input", tiny.enhanced, "--output", other, "--seed", 7, check=True)
    assert other.read_bytes() != output.read_bytes()


@pytest.mark.parametrize("content,expected", [
    (b'{"orig_captions": ["a dog"]}\n{broken\n', ":2: not valid JSON"),
    (b'{"image_path": "a.jpg"}\n', ":1: record has no 'orig_captions'"),
    (b'{"orig_captions": ["a dog", 3]}\n', "'orig_captions'[1] must be a string"),
    (b"", "holds no records"),
])
def test_generator_bad_input_is_one_clear_error(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    result = run_script("make_compositional_perturb.py", "--input", path)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: ") and expected in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_generator_without_spacy_says_so_in_one_line(tmp_path):
    path = tmp_path / "base.jsonl"
    path.write_text('{"orig_captions": ["a dog"]}\n')
    # The script as a user runs it, with spaCy made unimportable whether or not it is installed.
    script = str(REPO / "make_compositional_perturb.py")
    program = (f"import sys, runpy; sys.modules['spacy'] = None; "
               f"sys.argv = [{script!r}, '--input', {str(path)!r}, '--tagger', 'spacy']; "
               f"runpy.run_path({script!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=str(REPO))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "spaCy is not installed" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.jsonl"]


# --- run_compositional.py against a plain computation ----------------------------------------

@pytest.fixture(scope="module")
def evaluated(tiny, compositional, tmp_path_factory):
    output, _ = compositional
    out = tmp_path_factory.mktemp("compositional_metrics")
    result = run_script("run_compositional.py", "--input", output, "--models", tiny.openclip, "--output-dir", out,
                        "--quiet", "--bootstrap", 200)
    assert result.returncode == 0, result.stderr
    tag = parse_spec(tiny.openclip).tag
    path = out / f"{output.stem}__COMPOSITIONAL_{tag}.metrics.json"
    return json.load(open(path)), path, result


def plain_probes(spec, jsonl):
    """Every compositional comparison, one record and caption at a time, for the image
    and for the blind baseline (the mean image embedding)."""
    encoder = PlainEncoder(spec)
    folder = os.path.dirname(jsonl)
    records = read_jsonl(jsonl)
    texts = sorted({t for r in records for i, c in enumerate(r["orig_captions"]) for t in
                    [c, r["order_orig"][str(i)], *r["same_caps"][str(i)], *r["diff_caps"][str(i)],
                     *(item["text"] for key in ("order_caps", "swap_caps") for item in r[key][str(i)])]})
    cache = {}
    for start in range(0, len(texts), 128):  # CLIP's causal text tower: a batch gives each text's own embedding
        cache.update(zip(texts[start:start + 128], encoder.texts(texts[start:start + 128]).numpy()))
    text = cache.__getitem__

    images = [encoder.image(os.path.join(folder, r["image_path"])).numpy() for r in records]
    mean = np.mean(images, axis=0)
    results = {}
    for view, vectors in [("image", images), ("blind", [mean / np.linalg.norm(mean)] * len(images))]:
        order, swaps, triples = [], [], []
        for record, image in zip(records, vectors):
            for index, caption in enumerate(record["orig_captions"]):
                key = str(index)
                s = lambda t: float(image @ text(t))  # noqa: E731
                s_c = s(caption)
                shuffles = record["order_caps"][key]
                if shuffles:
                    s_o = s(record["order_orig"][key])
                    order.append((s_o, [(item["order_type"], s(item["text"])) for item in shuffles]))
                swaps += [(item["swap_type"], s_c, s(item["text"])) for item in record["swap_caps"][key]]
                flip_type = {t: ft for ft in ("color", "number", "object") for t in record[f"diff_caps_{ft}"][key]}
                negatives = [(flip_type.get(t, "all"), s(t)) for t in record["diff_caps"][key]]
                negatives += [(item["swap_type"], s(item["text"])) for item in record["swap_caps"][key]]
                for paraphrase, kind in zip(record["same_caps"][key], record["same_caps_kind"][key]):
                    s_p = s(paraphrase)
                    triples += [(kind, negative_type, s_c, s_p, s_n) for negative_type, s_n in negatives]
        results[view] = (order, swaps, triples)
    return results


def check(value, wins, near):
    """The engine's share equals the plain one, but for comparisons closer than NEAR."""
    wins, near = np.asarray(wins, dtype=bool), np.asarray(near, dtype=bool)
    assert value is not None and len(wins)
    assert abs(value - wins.mean()) * len(wins) <= near.sum() + 1e-9, (value, wins.mean(), near.sum())


def test_metrics_equal_a_plain_computation_with_blind_baseline(tiny, compositional, evaluated):
    metrics, _path, _result = evaluated
    output, _ = compositional
    plain = plain_probes(tiny.openclip, str(output))
    assert metrics["num_samples"] == 16
    for view, section in [("image", metrics), ("blind", metrics["blind"])]:
        order, swaps, triples = plain[view]
        # order: P@1 over captions (a tie counts against the caption), pairwise per type
        hits = [s_o > max(s for _t, s in shuffled) for s_o, shuffled in order]
        near = [min(abs(s_o - s) for _t, s in shuffled) < NEAR for s_o, shuffled in order]
        assert section["order"]["num_captions"] == len(order)
        check(section["order"]["precision_at_1"], hits, near)
        for order_type in ORDER_TYPES:
            pairs = [(s_o, s) for s_o, shuffled in order for t, s in shuffled if t == order_type]
            assert section["order"]["by_order_type"][order_type]["count"] == len(pairs)
            if pairs:
                check(section["order"]["by_order_type"][order_type]["accuracy"], [a > b for a, b in pairs],
                      [abs(a - b) < NEAR for a, b in pairs])
        # swaps
        assert section["swaps"]["count"] == len(swaps)
        check(section["swaps"]["accuracy"], [c > n for _t, c, n in swaps], [abs(c - n) < NEAR for _t, c, n in swaps])
        for swap_type in ("relation",):
            of_type = [(c, n) for t, c, n in swaps if t == swap_type]
            assert section["swaps"]["by_swap_type"][swap_type]["count"] == len(of_type)
            check(section["swaps"]["by_swap_type"][swap_type]["accuracy"], [c > n for c, n in of_type],
                  [abs(c - n) < NEAR for c, n in of_type])
        # triples
        c, p, n = (np.array([t[i] for t in triples]) for i in (2, 3, 4))
        near = (np.abs(c - n) < NEAR) | (np.abs(p - n) < NEAR)
        original, augmented = c > n, (c > n) & (p > n)
        brittle = ((c > n) & (n > p)) | ((p > n) & (n > c))
        assert section["triples"]["count"] == len(triples)
        check(section["triples"]["original_accuracy"], original, near)
        check(section["triples"]["augmented_accuracy"], augmented, near)
        check(section["triples"]["brittleness"], brittle, near)
        kinds = np.array([t[0] for t in triples])
        negative_types = np.array([t[1] for t in triples])
        for kind in set(kinds):
            check(section["triples"]["by_paraphrase_kind"][kind]["brittleness"], brittle[kinds == kind], near[kinds == kind])
        for negative_type in set(negative_types):
            at = negative_types == negative_type
            assert section["triples"]["by_negative_type"][negative_type]["count"] == int(at.sum())
            check(section["triples"]["by_negative_type"][negative_type]["augmented_accuracy"], augmented[at], near[at])
    assert {"relation", "color", "object"} <= set(metrics["triples"]["by_negative_type"])
    for name in ["order.precision_at_1", "swaps.accuracy", "triples.brittleness", "blind.triples.original_accuracy"]:
        low, high = metrics["ci95"][name]
        assert low <= metric_value(metrics, name) <= high
    assert metrics["config"]["script"] == "run_compositional.py"


@pytest.mark.parametrize("change,expected", [
    (lambda r: r.pop("order_caps"), "run make_compositional_perturb.py on this file first"),
    (lambda r: r["order_orig"].pop("0"), "'order_orig'['0'] is not a string"),
    (lambda r: r["swap_caps"].update({"0": ["A horse riding a man."]}), "'swap_caps'['0'][0] must be an object"),
])
def test_bad_compositional_input_is_one_clear_error(tiny, compositional, tmp_path, change, expected):
    output, _ = compositional
    records = read_jsonl(output)
    records[0]["order_caps"]["0"] = records[0]["order_caps"]["0"] or [{"text": "x y", "order_type": "shuffle_trigrams"}]
    change(records[0])
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(InputError, match=":1: ") as raised:
        build_plan(str(path), run_compositional.variant_groups)
    assert expected in str(raised.value)
    result = run_script("run_compositional.py", "--input", path, "--models", tiny.openclip, "--quiet")
    assert result.returncode == 2 and expected in result.stderr


# --- the report ------------------------------------------------------------------------------

def test_report_has_a_compositional_table_and_diff(evaluated, tmp_path):
    metrics, path, _result = evaluated
    changed = json.loads(json.dumps(metrics))
    changed["triples"]["brittleness"] += 0.25
    changed["ci95"]["triples.brittleness"] = [value + 0.25 for value in changed["ci95"]["triples.brittleness"]]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / path.name).write_text(json.dumps(changed))
    lgip = tmp_path / "lgip.metrics.json"  # an LGIP file beside it: both tables, the plot from the LGIP rows
    lgip.write_text(json.dumps({"model_tag": "m", "num_samples": 3, "invariance_error_mean": 0.1,
                                "sensitivity_gap_mean": 0.02, "sensitivity_pos_rate": 0.6}))
    result = run_script("lgip_report.py", path, lgip, "--diff", path, tmp_path / "b" / path.name, "--csv",
                        tmp_path / "t.csv", "--plot-frontier", tmp_path / "f.png")
    assert result.returncode == 0, result.stderr
    assert "| invariance error ↓ [95% CI] |" in result.stdout and (tmp_path / "f.png").stat().st_size > 0
    assert "Compositional probes" in result.stdout and "| order P@1 ↑ [95% CI] |" in result.stdout
    assert "blind brittleness" in result.stdout and "swap acc. relation" in result.stdout
    [line] = [line for line in result.stdout.splitlines() if "| brittleness |" in line]
    assert "+0.2500" in line and "**no**" in line
    rows = lgip_report.load_rows([str(path)])
    assert rows[0]["order_p1"] == metrics["order"]["precision_at_1"]
    assert rows[0]["blind_brittleness"] == metrics["blind"]["triples"]["brittleness"]
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert {"order_p1", "order_p1_ci_low", "swap_relation", "blind_triple_augmented"} <= set(header)
