"""lgip_report.py's `--diff` pairing (by model, script and input file; ambiguity refused),
its plots (labels that never overlap, error bars explained, only types with bars in the
legend, the format the file name says), the compositional table's counts, and the
bootstrap's refusal to give an interval from a handful of images. Synthetic rows and
metric files: no model is needed."""
import json

import numpy as np
import pytest

import lgip_report
from lgip.io import InputError
from lgip.stats import MIN_RECORDS_FOR_INTERVAL, Bootstrap
from tests.helpers import error_lines, run_here


def fliptype_entry(tag, input_name, sha, pos_rate, limit=None):
    return {"model_tag": tag, "num_samples": 10, "invariance_error_mean": 0.1,
            "global_sensitivity": {"gap_mean": 0.02, "pos_rate": pos_rate, "count": 30},
            "by_flip_type": {"color": {"gap_mean": 0.01, "pos_rate": pos_rate, "count": 10},
                             "number": {"gap_mean": None, "pos_rate": None, "count": 0}},
            "config": {"script": "run_lgip_by_fliptype.py", "spec": f"hf:{tag}", "input": f"/data/{input_name}",
                       "input_sha256": sha, "limit": limit}}


def write(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


# --- --diff -------------------------------------------------------------------------------

def test_a_folder_of_paper_and_v2_results_diffed_with_itself_pairs_each_input_with_itself(tmp_path, monkeypatch,
                                                                                         capsys):
    write(tmp_path / "r" / "paper__LGIP_fliptypes.metrics.json", [fliptype_entry("m", "paper.jsonl", "aa", 0.6)])
    write(tmp_path / "r" / "v2__LGIP_fliptypes.metrics.json", [fliptype_entry("m", "v2.jsonl", "bb", 0.4)])
    code, out, err = run_here("lgip_report.py", ["--diff", tmp_path / "r", tmp_path / "r"], monkeypatch, capsys)
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| m |")]
    assert rows and all("+0.0000" in line for line in rows)
    assert {line.split(" | ")[1] for line in rows} == {"paper.jsonl", "v2.jsonl"}  # the inputs are shown


def test_one_result_on_each_side_pairs_across_inputs_and_shows_both(tmp_path):
    a = lgip_report.load_rows([str(write(tmp_path / "a.json", [fliptype_entry("m", "paper.jsonl", "aa", 0.6)]))])
    b = lgip_report.load_rows([str(write(tmp_path / "b.json", [fliptype_entry("m", "v2.jsonl", "bb", 0.4)]))])
    pairs, unpaired = lgip_report.diff_rows(a, b)
    assert len(pairs) == 1 and unpaired == []
    header, body = lgip_report.diff_table(pairs)
    assert header[1] == "input (A → B)" and body[0][1] == "paper.jsonl → v2.jsonl"
    assert [cells[5] for cells in body if cells[2] == "positive rate"] == ["-0.2000"]


def test_same_name_other_contents_is_paired_and_flagged(tmp_path):
    a = lgip_report.load_rows([str(write(tmp_path / "a.json", [fliptype_entry("m", "f.jsonl", "aa", 0.6)]))])
    b = lgip_report.load_rows([str(write(tmp_path / "b.json", [fliptype_entry("m", "f.jsonl", "cc", 0.6)]))])
    pairs, _unpaired = lgip_report.diff_rows(a, b)
    assert lgip_report.diff_table(pairs)[1][0][1] == "f.jsonl (contents differ)"


def test_an_ambiguous_pairing_is_refused_with_how_to_narrow_it(tmp_path):
    a = lgip_report.load_rows([str(write(tmp_path / "a.json", [fliptype_entry("m", "p1.jsonl", "1", 0.6),
                                                                 fliptype_entry("m", "p2.jsonl", "2", 0.6)]))])
    b = lgip_report.load_rows([str(write(tmp_path / "b.json", [fliptype_entry("m", "q1.jsonl", "3", 0.6),
                                                                 fliptype_entry("m", "q2.jsonl", "4", 0.6)]))])
    with pytest.raises(InputError, match=r"several inputs in A \(p1.jsonl, p2.jsonl\) and in B \(q1.jsonl, q2.jsonl\)"
                                         r".*narrow A and B"):
        lgip_report.diff_rows(a, b)
    # A full run and a --limit run of one file are different results, not duplicates.
    c = lgip_report.load_rows([str(write(tmp_path / "c.json", [fliptype_entry("m", "p1.jsonl", "1", 0.6),
                                                                 fliptype_entry("m", "p1.jsonl", "1", 0.5, limit=5)]))])
    assert sorted(row["input"] for row in c) == ["p1.jsonl", "p1.jsonl (first 5)"]
    pairs, unpaired = lgip_report.diff_rows(c, a[:1])
    assert [(x["input"], y["input"]) for x, y in pairs] == [("p1.jsonl", "p1.jsonl")]
    assert [row["input"] for row in unpaired] == ["p1.jsonl (first 5)"]
    with pytest.raises(InputError, match=r"in A \(p1.jsonl \(first 5\)\) and in B \(p2.jsonl\)"):
        lgip_report.diff_rows(c, a)  # the limited run and p2 are left over: which pairs what is a guess


@pytest.mark.parametrize("flag", [["--csv", "t.csv"], ["--plot-frontier", "f.png"], ["--plot-types", "t.png"],
                                  ["--correlate"]])
def test_outputs_of_the_inputs_with_diff_alone_are_refused(tmp_path, monkeypatch, capsys, flag):
    metric = write(tmp_path / "a.json", [fliptype_entry("m", "p.jsonl", "1", 0.6)])
    code, _out, err = run_here("lgip_report.py", ["--diff", metric, metric, *flag], monkeypatch, capsys)
    assert code == 2 and f"{flag[0]} works on the metric files given as inputs" in error_lines(err)[0]
    code, out, err = run_here("lgip_report.py", [metric, "--diff", metric, metric,
                                                 *[str(tmp_path / part) if "." in part else part for part in flag]],
                              monkeypatch, capsys)
    assert code == 0 and "A = " in out, err


# --- plots --------------------------------------------------------------------------------

def frontier_row(tag, x, y, spread=0.01):
    return {"model_tag": tag, "input": "f.jsonl", "invariance_error": x, "sensitivity_gap": y, "spec": "",
            "invariance_error_ci": (x - spread, x + spread), "sensitivity_gap_ci": (y - spread, y + spread)}


def text_boxes(figure, annotations):
    """Each label's text box in display units (its leader line left out)."""
    from matplotlib.text import Text

    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    return [Text.get_window_extent(annotation, renderer) for annotation in annotations]


@pytest.mark.parametrize("layout", ["coincident", "crowded", "the quickstart's two SigLIPs"])
def test_frontier_labels_never_overlap(layout):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    rows = {
        "coincident": [frontier_row(f"siglip_model_number_{i}", 0.05, 0.02) for i in range(6)],
        "crowded": [frontier_row(f"openclip_model_{i}", *rng.normal([0.05, 0.02], 0.002)) for i in range(12)],
        "the quickstart's two SigLIPs": [frontier_row("siglip_tiny-siglip", 0.0801, -0.0100),
                                         frontier_row("siglip_tiny-siglip_longest", 0.0802, -0.0101),
                                         frontier_row("openclip_models_tiny-openclip", 0.0774, -0.0065)],
    }[layout]
    figure, annotations, labels = lgip_report.frontier_figure(rows)
    boxes = text_boxes(figure, annotations)
    assert [annotation.get_text() for annotation in annotations] == labels and len(labels) == len(rows)
    for i, box in enumerate(boxes):
        for j in range(i):
            assert not box.overlaps(boxes[j]), f"{labels[i]!r} overlaps {labels[j]!r}"
    legend = figure.axes[0].get_legend()
    assert lgip_report.INTERVAL_NOTE in [text.get_text() for text in legend.get_texts()]  # the bars are explained
    plt.close(figure)


def test_the_types_legend_lists_only_types_with_bars(tmp_path, monkeypatch):
    import matplotlib.axes

    rows = lgip_report.load_rows([str(write(tmp_path / "a.json", [fliptype_entry("m", "p.jsonl", "1", 0.6)]))])
    legends = []
    original = matplotlib.axes.Axes.legend

    def remember(self, *args, **kwargs):
        legend = original(self, *args, **kwargs)
        legends.append([text.get_text() for text in legend.get_texts()])
        return legend

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", remember)
    lgip_report.plot_types(rows, str(tmp_path / "types.png"))
    assert legends == [["chance (0.5)", "color"]]  # "number" has no value: no bar, no entry; no intervals: no note


@pytest.mark.parametrize("name, magic", [("f.png", b"\x89PNG"), ("f.pdf", b"%PDF"), ("f.svg", b"<?xml"),
                                         ("f.PDF", b"%PDF")])
def test_a_plot_is_written_in_the_format_its_name_says(tmp_path, name, magic):
    lgip_report.plot_frontier([frontier_row("m", 0.05, 0.02)], str(tmp_path / name))
    assert (tmp_path / name).read_bytes().startswith(magic)


def test_a_plot_name_with_another_extension_is_refused_before_anything_is_read(tmp_path, monkeypatch, capsys):
    metric = write(tmp_path / "a.json", [fliptype_entry("m", "p.jsonl", "1", 0.6)])
    code, _out, err = run_here("lgip_report.py", [metric, "--plot-types", tmp_path / "t.jpg"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: --plot-types {tmp_path / 't.jpg'}: a plot is written as .png, .pdf, .svg; not .jpg"]
    assert not (tmp_path / "t.jpg").exists()


# --- counts, and no interval from a handful of images ------------------------------------

def test_the_compositional_table_shows_counts_and_no_interval_from_one_swap(tmp_path):
    entry = {"model_tag": "m", "num_samples": 1, "config": {"script": "run_compositional.py", "input": "/c.jsonl"},
             "order": {"precision_at_1": 0.5, "num_captions": 4, "pairwise_accuracy": 0.5, "count": 8},
             "swaps": {"accuracy": 1.0, "count": 1, "by_swap_type": {"relation": {"accuracy": 1.0, "count": 1}}},
             "triples": {"original_accuracy": 0.7, "augmented_accuracy": 0.6, "brittleness": 0.1, "count": 20},
             "blind": {}, "ci95": {"triples.brittleness": [0.05, 0.2]}}
    rows = lgip_report.load_rows([str(write(tmp_path / "c.json", entry))])
    header, [cells] = lgip_report.compositional_table(rows)
    shown = dict(zip(header, cells))
    assert shown["swap acc. relation ↑ [95% CI]"] == "1.000 (n=1)"
    assert shown["order P@1 ↑ [95% CI]"] == "0.500 (n=4)"
    assert shown["brittleness ↓ [95% CI]"] == "0.100 [0.050, 0.200] (n=20)"


def test_the_bootstrap_gives_no_interval_from_fewer_than_a_handful_of_images():
    values = np.arange(10, dtype=float)
    bootstrap = Bootstrap(num_records=10, resamples=200, seed=0, min_records=MIN_RECORDS_FOR_INTERVAL)
    bootstrap.add("many", values, np.arange(10))
    bootstrap.add("few", values[:MIN_RECORDS_FOR_INTERVAL - 1], np.arange(MIN_RECORDS_FOR_INTERVAL - 1))
    bootstrap.add("one image, many pairs", values, np.zeros(10, dtype=int))
    intervals = bootstrap.intervals()
    assert intervals["few"] is None and intervals["one image, many pairs"] is None
    low, high = intervals["many"]
    assert low < values.mean() < high
    assert Bootstrap(10, 200, 0).intervals() == {}  # nothing registered
    anyway = Bootstrap(10, 200, seed=0)  # the library's default asks for no minimum
    anyway.add("one image", values, np.zeros(10, dtype=int))
    assert anyway.intervals()["one image"] == [4.5, 4.5]
