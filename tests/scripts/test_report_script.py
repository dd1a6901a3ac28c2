"""Run as a user runs them, on the tiny offline models: retrieval recalls in a metric
file against a brute-force ranking, per-pair dumps, lgip_report.py's tables, plots and
diff."""
import csv
import gzip
import importlib.util
import json
import os

import numpy as np
import pytest

import lgip_report
from tests.helpers import TOL, PlainEncoder, read_jsonl, run_multi, run_script


def test_retrieval_recalls_match_a_brute_force_ranking(tiny, default_multi_run):
    metrics, _ = default_multi_run(tiny.openclip)
    encoder = PlainEncoder(tiny.openclip)
    records = read_jsonl(tiny.perturb)
    folder = os.path.dirname(tiny.perturb)
    images = np.stack([encoder.image(os.path.join(folder, r["image_path"])).numpy() for r in records])
    captions = [c for r in records for c in r["orig_captions"]]
    owner = np.repeat(np.arange(len(records)), [len(r["orig_captions"]) for r in records])
    texts = encoder.texts(captions).numpy()
    similarity = images @ texts.T
    for k in (1, 5, 10):
        # image -> text: some own caption among the k best (ties broken in the caption's favour)
        i2t = np.mean([np.sum(similarity[i] > similarity[i][owner == i].max()) < k for i in range(len(records))])
        t2i = np.mean([np.sum(similarity[:, c] > similarity[owner[c], c]) < k for c in range(len(captions))])
        assert metrics["retrieval"]["image_to_text"][f"R@{k}"] == pytest.approx(i2t, abs=TOL)
        assert metrics["retrieval"]["text_to_image"][f"R@{k}"] == pytest.approx(t2i, abs=TOL)
    assert metrics["retrieval"]["num_images"] == len(records) and metrics["retrieval"]["num_captions"] == len(captions)


def test_dump_pairs_holds_every_scored_pair(tiny, tmp_path):
    dump = tmp_path / "pairs.csv.gz"
    metrics, _ = run_multi(tiny, tiny.openclip, tmp_path, "--dump-pairs", dump)
    with gzip.open(dump, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["num_invariance_pairs"] + metrics["num_sensitivity_pairs"]
    same = [row for row in rows if row["variant_kind"] == "same"]
    diff = [row for row in rows if row["variant_kind"] == "diff"]
    assert np.mean([abs(float(r["gap"])) for r in same]) == pytest.approx(metrics["invariance_error_mean"], abs=TOL)
    assert np.mean([float(r["gap"]) > 0 for r in diff]) == pytest.approx(metrics["sensitivity_pos_rate"], abs=TOL)
    first = rows[0]
    record = read_jsonl(tiny.perturb)[int(first["line"]) - 1]
    assert first["caption"] == record["orig_captions"][int(first["caption_index"])]
    assert first["image_id"] == str(record["image_id"])
    assert float(first["gap"]) == pytest.approx(float(first["base_score"]) - float(first["variant_score"]), abs=TOL)


def test_dump_pairs_parquet_needs_pyarrow(tiny, tmp_path):
    path = tmp_path / "pairs.parquet"
    result = run_script("run_lgip_multi.py", "--input", tiny.perturb, "--models", tiny.openclip, "--quiet",
                        "--output-dir", tmp_path, "--bootstrap", 0, "--dump-pairs", path)
    if importlib.util.find_spec("pyarrow") is None:
        assert result.returncode == 2 and "Parquet needs pyarrow" in result.stderr
        assert not path.exists()
    else:
        import pyarrow.parquet as pq
        assert result.returncode == 0 and pq.read_table(path).num_rows > 0


# --- lgip_report.py ----------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(tiny, tmp_path_factory):
    """Metric files of both tiny models, under max_length and longest SigLIP padding."""
    root = tmp_path_factory.mktemp("report")
    for padding in ("max_length", "longest"):
        out = root / padding
        for script, data in [("run_lgip_multi.py", tiny.perturb), ("run_lgip_by_fliptype.py", tiny.fliptypes)]:
            result = run_script(script, "--input", data, "--models", tiny.openclip, tiny.siglip, "--output-dir", out,
                                "--quiet", "--bootstrap", 100, "--siglip-padding", padding)
            assert result.returncode == 0, result.stderr
    return root


def test_report_table_has_one_row_per_model_and_input(two_runs, tmp_path):
    result = run_script("lgip_report.py", two_runs / "max_length", "--csv", tmp_path / "table.csv")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 4  # header + 2 models x 2 inputs; the _ALL file repeats, it is not counted twice
    assert "invariance error" in lines[0] and "pos. rate color" in lines[0] and "R@1 i→t" in lines[0]
    with open(tmp_path / "table.csv", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    multi = json.load(open(two_runs / "max_length" / "base_perturb__LGIP_ALL.metrics.json"))
    by_tag = {row["model_tag"]: row for row in table if row["input"] == "base_perturb.jsonl"}
    for entry in multi:
        row = by_tag[entry["model_tag"]]
        assert float(row["invariance_error"]) == pytest.approx(entry["invariance_error_mean"])
        assert float(row["sensitivity_gap_ci_low"]) == pytest.approx(entry["ci95"]["sensitivity_gap_mean"][0])
        assert float(row["i2t_r1"]) == pytest.approx(entry["retrieval"]["image_to_text"]["R@1"])


def test_plots_are_pngs_of_the_rows_they_were_given(two_runs, tmp_path):
    from PIL import Image

    rows = lgip_report.load_rows([str(two_runs / "max_length")])
    frontier_labels = lgip_report.plot_frontier(rows, tmp_path / "frontier.png")
    types_plotted = lgip_report.plot_types(rows, tmp_path / "types.png")
    for name in ("frontier.png", "types.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 400 and image.size[1] > 300
    tags = {row["model_tag"] for row in rows}
    assert {label.split(" (")[0] for label in frontier_labels} == tags
    typed = [row for row in rows if row.get("pos_rate_color") is not None]
    assert {label.split(" (")[0] for label in types_plotted} == {row["model_tag"] for row in typed}
    for row in typed:
        assert types_plotted[row["model_tag"]]["color"] == row["pos_rate_color"]
    result = run_script("lgip_report.py", two_runs / "max_length", "--plot-frontier", tmp_path / "f2.png",
                        "--plot-types", tmp_path / "t2.png")
    assert result.returncode == 0 and (tmp_path / "f2.png").exists() and (tmp_path / "t2.png").exists()


def test_diff_shows_deltas_between_two_runs(two_runs):
    result = run_script("lgip_report.py", "--diff", two_runs / "max_length", two_runs / "longest")
    assert result.returncode == 0, result.stderr
    siglip_rows = [line for line in result.stdout.splitlines() if line.startswith("| siglip") and "invariance" in line]
    openclip_rows = [line for line in result.stdout.splitlines() if line.startswith("| openclip") and "invariance" in line]
    assert siglip_rows and openclip_rows
    assert all("+0.0000" in line for line in openclip_rows)  # padding does not touch open_clip models
    assert any("+0.0000" not in line for line in siglip_rows)  # and it moves SigLIP


def test_report_errors_are_clear(tmp_path):
    result = run_script("lgip_report.py", tmp_path / "nothing_here.json")
    assert result.returncode == 2 and "no such file or folder" in result.stderr
    (tmp_path / "x.json").write_text("{not json")
    result = run_script("lgip_report.py", tmp_path / "x.json")
    assert result.returncode == 2 and "x.json: not a readable JSON file" in result.stderr
