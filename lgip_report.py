"""Metric JSONs -> tables and pictures.

Reads any mix of the evaluation scripts' outputs (files, folders, globs; one model or
many; the release's own files too) and prints one Markdown row per (model, input file):
invariance error, sensitivity gap and positive rate with their 95% intervals, positive
rate per flip type, retrieval R@1 and the number of images. When run_compositional.py's
files are among the inputs, a second table follows: word-order Precision@1, swap
accuracy per swap type, hard-positive triple accuracy (original, augmented),
brittleness, and the same with the image replaced by the mean image (blind). Optional:
a CSV of the same tables, the invariance-sensitivity frontier and per-type bars (PNG,
PDF or SVG, by the file name), a side-by-side `--diff` of two runs (rows paired by model,
script and input file), `--correlate`, the rank correlation across models between
retrieval R@1 and each LGIP metric, and `--html`, one self-contained page with all of it
plus the examples behind the numbers, chosen by streaming the `--dump-pairs` files given
with `--pairs` (lgip/report/). No torch needed.
"""
import argparse
import csv
import glob
import hashlib
import io
import json
import os

import numpy as np

from lgip.cli import metric_value, positive_int, run_cli
from lgip.io import InputError, atomic_output, check_distinct_outputs, check_output_path
from lgip.report.examples import DEFAULT_EXAMPLES

FLIP_TYPES = ["color", "number", "object"]
METRICS = [  # (row key, label, higher is better)
    ("invariance_error", "invariance error", False),
    ("sensitivity_gap", "sensitivity gap", True),
    ("pos_rate", "positive rate", True),
]
# run_compositional.py: (row key, label, path in the metric file, higher is better); each
# also has a blind baseline (`blind_<key>`, path `blind.<path>`). Swap types are added
# per type found (`swap_<type>`).
COMPOSITIONAL_METRICS = [
    ("order_p1", "order P@1", "order.precision_at_1", True),
    ("triple_original", "triple orig. acc.", "triples.original_accuracy", True),
    ("triple_augmented", "triple aug. acc.", "triples.augmented_accuracy", True),
    ("brittleness", "brittleness", "triples.brittleness", False),
]
FAMILY_COLOURS = {"OpenAI CLIP": "#1f77b4", "OpenCLIP": "#2ca02c", "EVA02-CLIP": "#9467bd", "SigLIP": "#d62728",
                  "SigLIP2": "#ff7f0e", "other": "#7f7f7f"}
PLOT_DPI = 150
PLOT_FORMATS = ("png", "pdf", "svg")  # by the file name's extension; none (e.g. /dev/stdout): png
INTERVAL_NOTE = "bars: 95% bootstrap intervals (images resampled)"
LABEL_GAP_POINTS = 6  # first ring of label positions around a point, in points
LABEL_RINGS = 40  # rings tried before a label gives up on staying clear (never reached in practice)


# ---------------------------------------------------------------------------
# Reading metric files into flat rows
# ---------------------------------------------------------------------------

def expand_inputs(inputs):
    """Files, folders (every *.json inside, recursively) and globs -> sorted unique paths."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += glob.glob(os.path.join(item, "**", "*.json"), recursive=True)
        elif any(ch in item for ch in "*?["):
            matched = glob.glob(item, recursive=True)
            if not matched:
                raise InputError(f"{item}: the pattern matches no file")
            paths += matched
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise InputError(f"{item}: no such file or folder")
    return sorted(set(os.path.abspath(path) for path in paths))


def _interval(entry, name):
    interval = (entry.get("ci95") or {}).get(name)
    return tuple(interval) if interval else (None, None)


def compositional_metrics(swap_types):
    """[(row key, label, path, higher is better)]: order P@1, swap accuracy per swap
    type, then the triple metrics."""
    swaps = [(f"swap_{t}", f"swap acc. {t}", f"swaps.by_swap_type.{t}.accuracy", True) for t in swap_types]
    return COMPOSITIONAL_METRICS[:1] + swaps + COMPOSITIONAL_METRICS[1:]


def compositional_count(entry, name):
    """How many items a compositional metric is over: its section's `count`
    (`num_captions` for order P@1)."""
    section, _, metric = name.rpartition(".")
    counts = metric_value(entry, section) or {}
    return counts.get("num_captions" if metric == "precision_at_1" else "count")


def compositional_row(entry, row):
    """run_compositional.py's numbers, their counts, and their blind baselines, into `row`."""
    row["kind"] = "compositional"
    for key, _label, name, _higher in compositional_metrics(metric_value(entry, "swaps.by_swap_type") or {}):
        row[f"{key}_n"] = compositional_count(entry, name)
        for prefix in ("", "blind."):
            column = ("blind_" if prefix else "") + key
            row[column] = metric_value(entry, prefix + name)
            row[f"{column}_ci"] = _interval(entry, prefix + name)
    return row


def lgip_row(entry, row, names, flip_stats=None, flip_stat_name=None):
    """An LGIP row: the three headline metrics from their dotted `names`, each with its
    interval; per flip type its positive rate, from `flip_stats` (type -> the summary
    holding `pos_rate`) and the interval named by `flip_stat_name(type)`; retrieval R@1."""
    for key, name in names.items():
        row[key] = metric_value(entry, name)
        row[f"{key}_ci"] = _interval(entry, name)
    for flip_type, summary in (flip_stats or {}).items():
        row[f"pos_rate_{flip_type}"] = summary.get("pos_rate")
        row[f"pos_rate_{flip_type}_ci"] = _interval(entry, flip_stat_name(flip_type))
    retrieval = entry.get("retrieval") or {}
    row["i2t_r1"] = (retrieval.get("image_to_text") or {}).get("R@1")
    row["t2i_r1"] = (retrieval.get("text_to_image") or {}).get("R@1")
    return row


def multi_row(entry, row):
    return lgip_row(entry, row, {"invariance_error": "invariance_error_mean", "sensitivity_gap": "sensitivity_gap_mean",
                                 "pos_rate": "sensitivity_pos_rate"})


def fliptype_row(entry, row):
    return lgip_row(entry, row, {"invariance_error": "invariance_error_mean",
                                 "sensitivity_gap": "global_sensitivity.gap_mean",
                                 "pos_rate": "global_sensitivity.pos_rate"},
                    entry.get("by_flip_type") or {}, lambda flip_type: f"by_flip_type.{flip_type}.pos_rate")


def enhanced_row(entry, row):
    overall = {flip_type: stats.get("overall") or {} for flip_type, stats in (entry.get("error_type_stats") or {}).items()}
    return lgip_row(entry, row, {"invariance_error": "global_invariance_error_mean",
                                 "sensitivity_gap": "global_sensitivity.gap_mean",
                                 "pos_rate": "global_sensitivity.pos_rate"},
                    overall, lambda flip_type: f"error_type_stats.{flip_type}.pos_rate")


def certification_row(entry, row):
    """run_semantic_certification.py's numbers: zero-shot accuracy, and at budget 0 the
    mean certified extent and certified-accuracy curve overall and per edit family; the
    overall mean certified extent at every budget."""
    row["kind"] = "certification"
    row["zero_shot"], row["zero_shot_ci"] = entry.get("zero_shot_accuracy"), _interval(entry, "zero_shot_accuracy")
    by_budget = entry.get("by_budget") or {}
    strict = by_budget.get("0") or {}
    row["mean_extent"] = strict.get("mean_certified_extent")
    row["mean_extent_ci"] = _interval(entry, "by_budget.0.mean_certified_extent")
    row["fully_certified"] = strict.get("share_fully_certified")
    row["family_extent"] = {family: numbers.get("mean_certified_extent")
                            for family, numbers in (strict.get("families") or {}).items()}
    row["family_curves"] = {family: numbers.get("certified_accuracy") or {}
                            for family, numbers in (strict.get("families") or {}).items()}
    row["budget_extent"] = {budget: numbers.get("mean_certified_extent") for budget, numbers in by_budget.items()}
    row["transform"] = entry.get("transform")
    return row


def matching_row(entry, row):
    """run_embedding_matching.py: zero-shot and systematic accuracy with their intervals,
    the target rate, the change in pixels, and the best noise-detection AUC over the
    statistics and sigmas (with which statistic and sigma gave it)."""
    row["kind"] = "matching"
    for key in ("zero_shot_accuracy", "systematic_accuracy", "target_rate"):
        row[key], row[f"{key}_ci"] = entry.get(key), _interval(entry, key)
    row["linf_mean"], row["num_pairs"] = metric_value(entry, "perturbation.linf_mean"), entry.get("num_pairs")
    best = metric_value(entry, "detection.best") or {}
    if best:
        statistic = max(best, key=lambda name: best[name]["auc"])
        row["detection_auc"], row["detection_at"] = best[statistic]["auc"], f"{statistic}, σ={best[statistic]['sigma']:g}"
    return row


def matching_table(rows):
    """(header, body) of the embedding-matching table, one row per model and input."""
    header = ["model", "input", "zero-shot acc. [95% CI]", "systematic acc. [95% CI]", "target rate",
              "best detection AUC", "L∞ mean", "pairs"]
    body = [[row["model_tag"], row["input"], fmt_ci(row["zero_shot_accuracy"], row.get("zero_shot_accuracy_ci"), 3),
             fmt_ci(row["systematic_accuracy"], row.get("systematic_accuracy_ci"), 3), fmt(row["target_rate"], 3),
             fmt(row.get("detection_auc"), 3) + (f" ({row['detection_at']})" if row.get("detection_at") else ""),
             fmt(row["linf_mean"]), str(row.get("num_pairs") or "–")] for row in rows]
    return header, body


# How each evaluation script's metric file becomes a row, by the script its config names.
READERS = {
    "run_lgip_multi.py": multi_row,
    "run_lgip_by_fliptype.py": fliptype_row,
    "rebuttal_enhanced_lgip_by_transformation.py": enhanced_row,
    "run_compositional.py": compositional_row,
    "run_semantic_certification.py": certification_row,
    "run_embedding_matching.py": matching_row,
}


def release_script(entry):
    """Which script wrote a metric dict that has no config block (the release's own
    files), told by its keys; None for anything else."""
    if "triples" in entry and "order" in entry:
        return "run_compositional.py"
    if "sensitivity_gap_mean" in entry:
        return "run_lgip_multi.py"
    if "by_flip_type" in entry:
        return "run_lgip_by_fliptype.py"
    if "error_type_stats" in entry:
        return "rebuttal_enhanced_lgip_by_transformation.py"
    return None


def entry_to_row(entry, path):
    """One model's metrics (from any of the evaluation scripts) as a flat row, or None
    when the entry is not a metric dict this report reads (e.g. a cache settings file)."""
    if not isinstance(entry, dict) or "model_tag" not in entry:
        return None
    config = entry.get("config") or {}
    script = config.get("script") or release_script(entry)
    if script not in READERS:
        return None
    limit = config.get("limit")
    row = {"model_tag": entry["model_tag"],
           "input": os.path.basename(config.get("input") or path) + (f" (first {limit})" if limit else ""),
           "input_sha256": config.get("input_sha256"), "limit": limit, "script": script,
           "num_images": entry.get("num_samples"), "source": path, "spec": config.get("spec", "")}
    return READERS[script](entry, row)


def load_rows(inputs, paths=None):
    """Every metric row in `inputs` (or the already expanded `paths`): a per-model file
    and the `_ALL` list that repeats it count once (the same entry, byte for byte)."""
    rows, seen = [], set()
    for path in paths if paths is not None else expand_inputs(inputs):
        try:
            with open(path, encoding="utf-8") as handle:
                payload = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: not a readable JSON file ({err})") from None
        for entry in payload if isinstance(payload, list) else [payload]:
            row = entry_to_row(entry, path)
            if row is None:
                continue
            identity = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
            if identity not in seen:
                seen.add(identity)
                rows.append(row)
    if not rows:
        raise InputError(f"{', '.join(inputs)}: no LGIP metric file found")
    return rows


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

def fmt(value, digits=4):
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_ci(value, interval, digits=4):
    if value is None:
        return "–"
    low, high = interval if interval else (None, None)
    return f"{value:.{digits}f}" + (f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None else "")


def flip_types_of(rows):
    extra = sorted({key[len("pos_rate_"):-len("_ci")] for row in rows for key in row
                    if key.startswith("pos_rate_") and key.endswith("_ci")} - set(FLIP_TYPES) - {""})
    present = [t for t in FLIP_TYPES if any(f"pos_rate_{t}" in row for row in rows)]
    return present + extra


def table(rows):
    """(header, body rows of strings) for the Markdown and CSV tables."""
    flip_types = flip_types_of(rows)
    header = (["model", "input", "invariance error ↓ [95% CI]", "sensitivity gap ↑ [95% CI]", "positive rate ↑ [95% CI]"]
              + [f"pos. rate {t}" for t in flip_types] + ["R@1 i→t", "R@1 t→i", "images"])
    body = []
    for row in rows:
        body.append([row["model_tag"], row["input"],
                     fmt_ci(row["invariance_error"], row.get("invariance_error_ci")),
                     fmt_ci(row["sensitivity_gap"], row.get("sensitivity_gap_ci")),
                     fmt_ci(row["pos_rate"], row.get("pos_rate_ci"), 3)]
                    + [fmt(row.get(f"pos_rate_{t}"), 3) for t in flip_types]
                    + [fmt(row.get("i2t_r1"), 3), fmt(row.get("t2i_r1"), 3), str(row.get("num_images") or "–")])
    return header, body


def compositional_columns(rows):
    """[(row key, label, higher is better)] for the compositional rows' metrics, swap
    types in the order first seen."""
    swap_types = dict.fromkeys(key[len("swap_"):] for row in rows for key in row
                               if key.startswith("swap_") and not key.endswith(("_ci", "_n")))
    return [(key, label, higher) for key, label, _name, higher in compositional_metrics(swap_types)]


def compositional_table(rows):
    """(header, body) of the compositional table: each metric with its interval and the
    number of items it is over (n), then the blind baselines, then the number of images."""
    columns = compositional_columns(rows)
    arrow = {True: "↑", False: "↓"}
    header = (["model", "input"] + [f"{label} {arrow[higher]} [95% CI]" for _key, label, higher in columns]
              + [f"blind {label}" for _key, label, _higher in columns] + ["images"])
    body = []
    for row in rows:
        body.append([row["model_tag"], row["input"]]
                    + [fmt_ci(row.get(key), row.get(f"{key}_ci"), 3)
                       + ("" if row.get(f"{key}_n") is None else f" (n={row[f'{key}_n']})")
                       for key, _label, _higher in columns]
                    + [fmt(row.get(f"blind_{key}"), 3) for key, _label, _higher in columns]
                    + [str(row.get("num_images") or "–")])
    return header, body


def markdown(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def certification_table(rows):
    """(header, body) of the certification rows: zero-shot accuracy, mean certified extent
    at budget 0 overall and per family, the share certified on all of [0, 1], and the
    overall mean certified extent at each other budget."""
    families = list(dict.fromkeys(family for row in rows for family in row["family_extent"]))
    budgets = [b for b in dict.fromkeys(b for row in rows for b in row["budget_extent"]) if b != "0"]
    header = (["model", "input", "transform", "zero-shot acc. [95% CI]", "mean cert. extent ↑ [95% CI]",
               "certified on [0, 1]"] + [f"extent {family}" for family in families]
              + [f"extent at eps {budget}" for budget in budgets] + ["images"])
    body = [[row["model_tag"], row["input"], row.get("transform") or "–", fmt_ci(row["zero_shot"], row["zero_shot_ci"], 3),
             fmt_ci(row["mean_extent"], row["mean_extent_ci"], 3), fmt(row["fully_certified"], 3)]
            + [fmt(row["family_extent"].get(family), 3) for family in families]
            + [fmt(row["budget_extent"].get(budget), 3) for budget in budgets] + [str(row.get("num_images") or "–")]
            for row in rows]
    return header, body


def write_csv(path, rows):
    """The tables with raw numbers (full precision, intervals as two columns): the LGIP
    columns when there are LGIP rows, the compositional ones when there are those."""
    lgip_rows = [row for row in rows if row.get("kind") is None]
    compositional_rows = [row for row in rows if row.get("kind") == "compositional"]
    composition = ([key for key, _label, _higher in compositional_columns(compositional_rows)]
                   if compositional_rows else [])
    with_intervals = [key for key, _label, _higher in METRICS] if lgip_rows else []
    with_intervals += composition + [f"blind_{key}" for key in composition]
    columns = ["model_tag", "input", "script", "spec", "num_images"]
    for key in with_intervals:
        columns += [key, f"{key}_ci_low", f"{key}_ci_high"]
    if lgip_rows:
        columns += [f"pos_rate_{t}" for t in flip_types_of(lgip_rows)] + ["i2t_r1", "t2i_r1"]
    columns += [f"{key}_n" for key in composition] + ["source"]
    with atomic_output(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            flat = dict(row)
            for key in with_intervals:
                flat[f"{key}_ci_low"], flat[f"{key}_ci_high"] = row.get(f"{key}_ci") or (None, None)
            writer.writerow(["" if flat.get(column) is None else flat.get(column) for column in columns])


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------

def family(model_tag, spec=""):
    text = f"{model_tag} {spec}".lower()
    if "siglip2" in text:
        return "SigLIP2"
    if "siglip" in text:
        return "SigLIP"
    if "eva02" in text:
        return "EVA02-CLIP"
    if "openai" in text:
        return "OpenAI CLIP"
    if "openclip" in text or "laion" in text:
        return "OpenCLIP"
    return "other"


def plot_format(path):
    """The format a plot is written in, from its file name: png, pdf or svg (png for a
    name without an extension, such as /dev/stdout); InputError for any other."""
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension and extension not in PLOT_FORMATS:
        raise InputError(f"{path}: a plot is written as {', '.join('.' + f for f in PLOT_FORMATS)}; "
                         f"not .{extension}")
    return extension or "png"


def _save_figure(figure, path):
    """The figure in the format its name says, written atomically."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format=plot_format(path), dpi=PLOT_DPI, bbox_inches="tight")
    plt.close(figure)
    with atomic_output(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _interval_handle():
    """A legend entry that says what the error bars are."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color="#444444", marker="|", markersize=10, linestyle="None", label=INTERVAL_NOTE)


def place_labels(figure, axes, anchors, texts, obstacles=()):
    """Annotate each anchor (data coordinates) with its text where the text overlaps no
    label placed before it, no other point and no obstacle (boxes in display units):
    positions are tried in rings of eight around the anchor, nearest first, inside the
    axes if any ring allows it; a label set off from its point gets a thin leader line.
    Deterministic: the same rows give the same picture. Returns the annotations."""
    figure.canvas.draw()  # fixes the axes limits, so data -> display is final
    renderer = figure.canvas.get_renderer()
    to_display = axes.transData.transform
    markers = []
    for x, y in anchors:  # each point's marker is kept clear of other points' labels
        cx, cy = to_display((x, y))
        half = 4.5 * figure.dpi / 72
        markers.append((cx - half, cy - half, cx + half, cy + half))
    taken = [tuple(box.extents) for box in obstacles] + markers
    frame = axes.get_window_extent(renderer).extents
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]

    def overlaps(a, b):
        return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]

    annotations = []
    for index, ((x, y), text) in enumerate(zip(anchors, texts)):
        annotation = axes.annotate(text, (x, y), textcoords="offset points", xytext=(0, 0), fontsize=7)
        others = [box for number, box in enumerate(taken) if number != len(obstacles) + index]
        choice = None
        for must_fit in (True, False):
            for ring in range(LABEL_RINGS):
                distance = LABEL_GAP_POINTS * (1 + ring)
                for dx, dy in directions:
                    annotation.set_position((dx * distance, dy * distance))
                    annotation.set_horizontalalignment({1: "left", -1: "right", 0: "center"}[dx])
                    annotation.set_verticalalignment({1: "bottom", -1: "top", 0: "center"}[dy])
                    box = tuple(annotation.get_window_extent(renderer).extents)
                    inside = frame[0] <= box[0] and box[2] <= frame[2] and frame[1] <= box[1] and box[3] <= frame[3]
                    if (inside or not must_fit) and not any(overlaps(box, other) for other in others):
                        choice = (ring, box)
                        break
                if choice:
                    break
            if choice:
                break
        ring, box = choice or (0, tuple(annotation.get_window_extent(renderer).extents))
        if ring > 1:  # far from its point: a thin line says whose label it is
            annotation.remove()
            position, alignment = annotation.get_position(), (annotation.get_ha(), annotation.get_va())
            annotation = axes.annotate(text, (x, y), textcoords="offset points", xytext=position, fontsize=7,
                                       ha=alignment[0], va=alignment[1],
                                       arrowprops={"arrowstyle": "-", "color": "#999999", "linewidth": 0.5,
                                                   "shrinkA": 0, "shrinkB": 3})
        taken.append(box)
        annotations.append(annotation)
    return annotations


def frontier_points(rows):
    """The rows that can be drawn on the frontier, each (model, input, values) once."""
    points, seen = [], set()
    for row in rows:  # the same model on the same file from two scripts is one point
        identity = (row["model_tag"], row["input"], row["invariance_error"], row["sensitivity_gap"])
        if row["invariance_error"] is not None and row["sensitivity_gap"] is not None and identity not in seen:
            seen.add(identity)
            points.append(row)
    if not points:
        raise InputError("--plot-frontier: no row has both an invariance error and a sensitivity gap")
    return points


def frontier_figure(rows):
    """(figure, label annotations, labels): invariance error (x, lower is better) against
    sensitivity gap (y, higher is better), one point per row with its interval bars,
    families in colour, the better corner marked, labels placed clear of each other."""
    plt = _pyplot()
    points = frontier_points(rows)
    figure, axes = plt.subplots(figsize=(9.5, 5.5))
    labels, anchors, used_families, with_intervals = [], [], {}, False
    several_inputs = len({row["input"] for row in points}) > 1
    for row in points:
        x, y = row["invariance_error"], row["sensitivity_gap"]
        x_low, x_high = row.get("invariance_error_ci") or (None, None)
        y_low, y_high = row.get("sensitivity_gap_ci") or (None, None)
        with_intervals |= x_low is not None or y_low is not None
        name = family(row["model_tag"], row.get("spec", ""))
        colour = FAMILY_COLOURS[name]
        axes.errorbar(x, y, xerr=None if x_low is None else [[x - x_low], [x_high - x]],
                      yerr=None if y_low is None else [[y - y_low], [y_high - y]], fmt="o", color=colour,
                      ecolor=colour, elinewidth=1, capsize=3, markersize=7, label=None if name in used_families else name)
        used_families[name] = colour
        labels.append(row["model_tag"] + (f" ({row['input']})" if several_inputs else ""))
        anchors.append((x, y))
    axes.axhline(0.0, color="#999999", linewidth=0.8, linestyle=":")
    axes.set_xlabel("invariance error (mean |Δ score| under paraphrase)  →  lower is better")
    axes.set_ylabel("sensitivity gap (mean score drop under a flip)  →  higher is better")
    axes.set_title("LGIP invariance–sensitivity frontier")
    better = axes.annotate("better", xy=(0.03, 0.97), xycoords="axes fraction", xytext=(0.18, 0.84),
                           textcoords="axes fraction", fontsize=9, color="#333333", ha="center",
                           arrowprops={"arrowstyle": "->", "color": "#333333"})
    handles, names = axes.get_legend_handles_labels()
    if with_intervals:
        handles.append(_interval_handle())
        names.append(INTERVAL_NOTE)
    # Beside the axes, so it never hides a point.
    legend = axes.legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=True)
    axes.grid(alpha=0.3)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    annotations = place_labels(figure, axes, anchors, labels,
                               [legend.get_window_extent(renderer), better.get_window_extent(renderer)])
    return figure, annotations, labels


def plot_frontier(rows, path):
    """The frontier (see frontier_figure) written to `path` (png, pdf or svg). Returns
    the labels plotted, in order."""
    figure, _annotations, labels = frontier_figure(rows)
    _save_figure(figure, path)
    return labels


def typed_rows(rows):
    """The rows with a positive rate for some flip type (what --plot-types draws)."""
    typed = [row for row in rows if any(row.get(f"pos_rate_{t}") is not None for t in flip_types_of(rows))]
    if not typed:
        raise InputError("--plot-types: no row has per-type positive rates (use run_lgip_by_fliptype.py's output)")
    return typed


def plot_types(rows, path):
    """Positive rate per flip type, grouped bars per model, a line at chance (0.5); the
    legend names only the types that have a bar and says what the error bars are.
    Returns {label: {flip type: positive rate}} as plotted."""
    plt = _pyplot()
    typed = typed_rows(rows)
    flip_types = [t for t in flip_types_of(typed) if any(row.get(f"pos_rate_{t}") is not None for row in typed)]
    several_inputs = len({row["input"] for row in typed}) > 1
    labels = [row["model_tag"] + (f" ({row['input']})" if several_inputs else "") for row in typed]
    width = 0.8 / max(1, len(flip_types))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.0 + 0.9 * len(typed)), 4.8))
    plotted = {label: {} for label in labels}
    colours = plt.get_cmap("tab10")
    with_intervals = False
    for position, flip_type in enumerate(flip_types):
        values = [row.get(f"pos_rate_{flip_type}") for row in typed]
        centres = np.arange(len(typed)) + (position - (len(flip_types) - 1) / 2) * width
        heights = [np.nan if value is None else value for value in values]
        errors = []
        for row, value in zip(typed, values):
            low, high = row.get(f"pos_rate_{flip_type}_ci") or (None, None)
            with_intervals |= low is not None and value is not None
            errors.append((0, 0) if low is None or value is None else (value - low, high - value))
        axes.bar(centres, heights, width, label=flip_type, color=colours(position % 10),
                 yerr=np.array(errors).T, capsize=2, error_kw={"elinewidth": 0.8})
        for label, value in zip(labels, values):
            plotted[label][flip_type] = value
    axes.axhline(0.5, color="black", linestyle="--", linewidth=1, label="chance (0.5)")
    axes.set_xticks(np.arange(len(typed)))
    axes.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("positive rate (caption scored above its flip)")
    axes.set_title("Positive rate per flip type")
    handles, names = axes.get_legend_handles_labels()
    if with_intervals:
        handles.append(_interval_handle())
        names.append(INTERVAL_NOTE)
    axes.legend(handles, names, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.grid(axis="y", alpha=0.3)
    _save_figure(figure, path)
    return plotted


# ---------------------------------------------------------------------------
# Diff and correlation
# ---------------------------------------------------------------------------

def plot_certified(rows, path):
    """Certified accuracy (budget 0) against extent, one curve per edit family, one panel
    per (model, input). Returns {label: {family: [(extent, accuracy)]}} as plotted."""
    plt = _pyplot()
    if not rows:
        raise InputError("--plot-certified: no run_semantic_certification.py metric file among the inputs")
    columns = min(3, len(rows))
    figure, grid = plt.subplots((len(rows) + columns - 1) // columns, columns, squeeze=False,
                                figsize=(4.2 * columns, 3.4 * ((len(rows) + columns - 1) // columns)))
    plotted = {}
    for axes, row in zip(grid.ravel(), rows):
        label = f"{row['model_tag']} ({row['input']})"
        plotted[label] = {}
        for family, curve in row["family_curves"].items():
            points = sorted((float(level), value) for level, value in curve.items() if value is not None)
            axes.plot([0.0] + [x for x, _ in points], [row["zero_shot"]] + [y for _, y in points], marker="o",
                      markersize=3, label=family)
            plotted[label][family] = points
        axes.set_title(label, fontsize=8)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_xlabel("extent phi")
        axes.set_ylabel("certified accuracy")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=6)
    for axes in grid.ravel()[len(rows):]:
        axes.set_visible(False)
    figure.suptitle("Certified accuracy against extent (budget 0; at 0: zero-shot accuracy)", fontsize=9)
    _save_figure(figure, path)
    return plotted


def _input_key(row):
    """What identifies the data a row was computed on: the input's sha256 where the
    metric file records one, else its name; and the --limit, if any."""
    return row.get("input_sha256") or row["input"], row.get("limit")


def diff_rows(rows_a, rows_b):
    """Pairs of rows, in A's order, for the same model (tag) and script: on the same
    input (by checksum, else by name, and the same --limit). Where a model and script
    have exactly one row on each side, they pair even across inputs (paper rules vs v2
    rules; the table shows both names). Rows left over on both sides cannot be paired
    by meaning: InputError saying how to narrow A and B. Returns (pairs, the rows only
    one side has)."""
    groups = {}
    for side, rows in (("a", rows_a), ("b", rows_b)):
        for row in rows:
            groups.setdefault((row["model_tag"], row["script"]), {"a": [], "b": []})[side].append(row)
    pairs, unpaired = [], []
    for (model_tag, script), sides in groups.items():
        if len(sides["a"]) == 1 and len(sides["b"]) == 1:
            pairs.append((sides["a"][0], sides["b"][0]))
            continue
        left_a, left_b = list(sides["a"]), list(sides["b"])
        for key in (_input_key, lambda row: row["input"]):
            for row_a in list(left_a):
                match = [row_b for row_b in left_b if key(row_b) == key(row_a)]
                if len(match) == 1 and sum(key(other) == key(row_a) for other in left_a) == 1:
                    pairs.append((row_a, match[0]))
                    left_a.remove(row_a)
                    left_b.remove(match[0])
        if left_a and left_b:
            names = lambda rows: ", ".join(sorted(row["input"] for row in rows))  # noqa: E731
            raise InputError(f"--diff: {model_tag} ({script}) has results on several inputs in A ({names(left_a)}) "
                             f"and in B ({names(left_b)}) that cannot be paired by input; narrow A and B to one "
                             f"result each (name the metric files, or folders holding one run each)")
        unpaired += left_a + left_b
    if not pairs:
        raise InputError("--diff: no model appears in both A and B (rows are paired by model tag, script and input)")
    order = {id(row): number for number, row in enumerate(rows_a)}
    return sorted(pairs, key=lambda pair: order[id(pair[0])]), unpaired


def intervals_overlap(a, b):
    if not a or not b or a[0] is None or b[0] is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def diff_table(pairs):
    metrics = [(key, label) for key, label, _ in METRICS]
    flip_types = flip_types_of([row for pair in pairs for row in pair])
    metrics += [(f"pos_rate_{t}", f"pos. rate {t}") for t in flip_types] + [("i2t_r1", "R@1 i→t"), ("t2i_r1", "R@1 t→i")]
    composition = compositional_columns([row for pair in pairs for row in pair if row.get("kind") == "compositional"])
    metrics += [(key, label) for key, label, _higher in composition]
    metrics += [(f"blind_{key}", f"blind {label}") for key, label, _higher in composition]
    header = ["model", "input (A → B)", "metric", "A", "B", "B − A", "95% CIs overlap"]
    body = []
    for row_a, row_b in pairs:
        inputs = row_a["input"] if row_a["input"] == row_b["input"] else f"{row_a['input']} → {row_b['input']}"
        if row_a["input"] == row_b["input"] and _input_key(row_a) != _input_key(row_b):
            inputs += " (contents differ)"
        for key, label in metrics:
            a, b = row_a.get(key), row_b.get(key)
            if a is None and b is None:
                continue
            overlap = intervals_overlap(row_a.get(f"{key}_ci"), row_b.get(f"{key}_ci"))
            body.append([row_a["model_tag"], inputs, label, fmt(a), fmt(b),
                         "–" if a is None or b is None else f"{b - a:+.4f}",
                         "–" if overlap is None else ("yes" if overlap else "**no**")])
    return header, body


def spearman(x, y):
    """Spearman's rank correlation (average ranks for ties); None for fewer than 3 points."""
    def ranks(values):
        order = np.argsort(values, kind="mergesort")
        ranked = np.empty(len(values))
        ranked[order] = np.arange(1, len(values) + 1)
        for value in np.unique(values):
            tied = values == value
            ranked[tied] = ranked[tied].mean()
        return ranked

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3:
        return None
    rank_x, rank_y = ranks(x), ranks(y)
    if rank_x.std() == 0 or rank_y.std() == 0:
        return None
    return float(np.corrcoef(rank_x, rank_y)[0, 1])


def correlations(rows):
    """{(retrieval metric, LGIP metric): (rho, number of models)} across rows that have both."""
    result = {}
    for retrieval_key, retrieval_label in [("i2t_r1", "R@1 image→text"), ("t2i_r1", "R@1 text→image")]:
        for key, label, _higher in METRICS:
            usable = [row for row in rows if row.get(retrieval_key) is not None and row.get(key) is not None]
            result[(retrieval_label, label)] = (spearman([r[retrieval_key] for r in usable], [r[key] for r in usable]),
                                                len(usable))
    return result


# ---------------------------------------------------------------------------

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="metric JSON files, folders or globs")
    parser.add_argument("--csv", metavar="PATH", help="also write the table of the inputs as CSV (full precision)")
    parser.add_argument("--plot-frontier", metavar="PATH",
                        help="invariance error vs sensitivity gap of the inputs, one point per model; PNG, PDF or SVG "
                             "by the name's extension")
    parser.add_argument("--plot-types", metavar="PATH",
                        help="positive rate per flip type per model of the inputs, bars; PNG, PDF or SVG")
    parser.add_argument("--plot-certified", metavar="PATH",
                        help="certified accuracy against extent, one curve per edit family, per model "
                             "(run_semantic_certification.py's files); PNG, PDF or SVG")
    parser.add_argument("--diff", nargs=2, metavar=("A", "B"),
                        help="two metric files or folders side by side, paired by model, script and input file, with "
                             "deltas (--csv, --plot-* and --correlate apply to the inputs, so they need some)")
    parser.add_argument("--correlate", action="store_true",
                        help="rank correlation across models between retrieval R@1 and each LGIP metric")
    parser.add_argument("--html", metavar="PATH.html",
                        help="one self-contained page: leaderboard, plots, examples from --pairs, run facts")
    parser.add_argument("--pairs", nargs="+", metavar="FILE", default=[],
                        help="--dump-pairs files (CSV, .csv.gz, .parquet) to choose the page's examples from")
    parser.add_argument("--examples", type=positive_int, default=DEFAULT_EXAMPLES, metavar="K",
                        help="examples per model and group on the page (default: %(default)s)")
    args = parser.parse_args()
    if args.pairs and not args.html:
        parser.error("--pairs chooses the examples of the --html page: give --html PATH too")
    if not args.inputs and not args.diff and not (args.html and args.pairs):
        parser.error("give metric files/folders, --diff A B, or --html PAGE --pairs DUMP...")
    if args.diff and not args.inputs:
        asked = [flag for flag, value in [("--csv", args.csv), ("--plot-frontier", args.plot_frontier),
                                          ("--plot-types", args.plot_types), ("--plot-certified", args.plot_certified),
                                          ("--correlate", args.correlate)] if value]
        if asked:
            parser.error(f"{asked[0]} works on the metric files given as inputs, and with --diff alone there are "
                         f"none; add them (e.g. lgip_report.py B --diff A B {asked[0]} ...)")
    return args


def check_outputs(args, paths):
    """Every file the report writes, checked before anything is read: a plot's format
    from its name, a writable place, not one of the metric files read, not the same
    file twice."""
    outputs = [("--csv", args.csv), ("--plot-frontier", args.plot_frontier), ("--plot-types", args.plot_types),
               ("--plot-certified", args.plot_certified), ("--html", args.html)]
    for flag, path in outputs:
        if path is None:
            continue
        if flag.startswith("--plot"):
            try:
                plot_format(path)
            except InputError as err:
                raise InputError(f"{flag} {err}") from None
        check_output_path(path, paths, flag)
    check_distinct_outputs(outputs)


def main():
    args = parse_args()
    paths = expand_inputs(args.inputs) if args.inputs else []
    diff_paths = [expand_inputs([side]) for side in args.diff] if args.diff else []
    check_outputs(args, paths + [path for side in diff_paths for path in side] + list(args.pairs))
    if args.diff:
        pairs, unpaired = diff_rows(load_rows([args.diff[0]], diff_paths[0]), load_rows([args.diff[1]], diff_paths[1]))
        print(f"A = {args.diff[0]}\nB = {args.diff[1]}\n")
        print(markdown(*diff_table(pairs)))
        for row in unpaired:
            side = "A" if row["source"] in diff_paths[0] else "B"
            print(f"only in {side}: {row['model_tag']} ({row['script']}) on {row['input']}")
        if not args.inputs and not args.html:
            return
        print()
    rows = load_rows(args.inputs, paths) if args.inputs else []
    lgip_rows = [row for row in rows if row.get("kind") is None]
    compositional_rows = [row for row in rows if row.get("kind") == "compositional"]
    certification_rows = [row for row in rows if row.get("kind") == "certification"]
    matching_rows = [row for row in rows if row.get("kind") == "matching"]
    if lgip_rows:
        print(markdown(*table(lgip_rows)))
    if args.plot_frontier:  # what a plot needs is checked before any file is written
        frontier_points(lgip_rows)
    if args.plot_types:
        typed_rows(lgip_rows)
    if args.plot_certified and not certification_rows:
        raise InputError("--plot-certified: no run_semantic_certification.py metric file among the inputs")
    if compositional_rows:
        print(("\n" if lgip_rows else "") + "Compositional probes (run_compositional.py; blind: the image replaced by "
              "the mean image embedding):\n")
        print(markdown(*compositional_table(compositional_rows)))
    if certification_rows:
        print(("\n" if lgip_rows or compositional_rows else "") + "Semantic certification "
              "(run_semantic_certification.py; extents at budget 0 unless named):\n")
        print(markdown(*certification_table(certification_rows)))
    if matching_rows:
        print(("\n" if lgip_rows or compositional_rows or certification_rows else "") + "Zero-shot against systematic accuracy "
              "(run_embedding_matching.py; detection: matched vs natural images under pixel noise):\n")
        print(markdown(*matching_table(matching_rows)))
    if args.csv:
        write_csv(args.csv, rows)
        print(f"\nwrote {args.csv}")
    if args.plot_frontier:
        plot_frontier(lgip_rows, args.plot_frontier)
        print(f"wrote {args.plot_frontier}")
    if args.plot_types:
        plot_types(lgip_rows, args.plot_types)
        print(f"wrote {args.plot_types}")
    if args.plot_certified:
        plot_certified(certification_rows, args.plot_certified)
        print(f"wrote {args.plot_certified}")
    if args.correlate:
        print("\nSpearman rank correlation across models (retrieval vs LGIP):")
        for (retrieval_label, label), (rho, count) in correlations(lgip_rows).items():
            shown = "– (needs 3+ models with both)" if rho is None else f"{rho:+.3f}"
            print(f"  {retrieval_label:>15} vs {label:<17} rho = {shown}  (n={count})")
    if args.html:
        from lgip.report.html import ProbeTools, ReportTools, write_html_report

        probes = [ProbeTools("certification", "Semantic certification",
                             "How far an image embedding moves along a text-defined edit before its zero-shot "
                             "prediction changes (run_semantic_certification.py; budget 0).",
                             certification_table, plot_certified),
                  ProbeTools("matching", "Embedding matching",
                             "Zero-shot against systematic accuracy: images optimised to embed as an image of another "
                             "class; detection AUC of matched against natural images under pixel noise "
                             "(run_embedding_matching.py).", matching_table)]
        tools = ReportTools(table=table, compositional_table=compositional_table,
                            plots=[("Invariance–sensitivity frontier", plot_frontier),
                                   ("Positive rate per flip type", plot_types)], probes=probes)
        size = write_html_report(args.html, rows, tools, args.pairs, args.examples)
        print(f"wrote {args.html} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    run_cli(main)
