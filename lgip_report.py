"""Metric JSONs -> tables and pictures.

Reads any mix of the evaluation scripts' outputs (files, folders, globs; one model or
many; the release's own files too) and prints one Markdown row per (model, input file):
invariance error, sensitivity gap and positive rate with their 95% intervals, positive
rate per flip type, retrieval R@1 and the number of images. When run_compositional.py's
files are among the inputs, a second table follows: word-order Precision@1, swap
accuracy per swap type, hard-positive triple accuracy (original, augmented),
brittleness, and the same with the image replaced by the mean image (blind). Optional:
a CSV of the same tables, the invariance-sensitivity frontier and per-type bars as PNGs,
a side-by-side `--diff` of two runs, and `--correlate`, the rank correlation across
models between retrieval R@1 and each LGIP metric. No torch needed.
"""
import argparse
import csv
import glob
import io
import json
import os

import numpy as np

from lgip.cli import metric_value, run_cli
from lgip.io import InputError, atomic_output

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


def compositional_row(entry, row):
    """run_compositional.py's numbers, and their blind baselines, into `row`."""
    row["kind"] = "compositional"
    for key, _label, name, _higher in compositional_metrics(metric_value(entry, "swaps.by_swap_type") or {}):
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
    row = {"model_tag": entry["model_tag"], "input": os.path.basename(config.get("input") or path),
           "script": script, "num_images": entry.get("num_samples"), "source": path, "spec": config.get("spec", "")}
    return READERS[script](entry, row)


def load_rows(inputs):
    """Every metric row in `inputs`, one per (model, input file, script): a per-model file
    and the `_ALL` list that repeats it count once."""
    rows, seen = [], set()
    for path in expand_inputs(inputs):
        try:
            with open(path, encoding="utf-8") as handle:
                payload = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: not a readable JSON file ({err})") from None
        for entry in payload if isinstance(payload, list) else [payload]:
            row = entry_to_row(entry, path)
            if row is None:
                continue
            identity = (row["model_tag"], row["input"], row["script"])
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
                               if key.startswith("swap_") and not key.endswith("_ci"))
    return [(key, label, higher) for key, label, _name, higher in compositional_metrics(swap_types)]


def compositional_table(rows):
    """(header, body) of the compositional table: each metric with its interval, then
    the blind baselines, then the number of images."""
    columns = compositional_columns(rows)
    arrow = {True: "↑", False: "↓"}
    header = (["model", "input"] + [f"{label} {arrow[higher]} [95% CI]" for _key, label, higher in columns]
              + [f"blind {label}" for _key, label, _higher in columns] + ["images"])
    body = []
    for row in rows:
        body.append([row["model_tag"], row["input"]]
                    + [fmt_ci(row.get(key), row.get(f"{key}_ci"), 3) for key, _label, _higher in columns]
                    + [fmt(row.get(f"blind_{key}"), 3) for key, _label, _higher in columns]
                    + [str(row.get("num_images") or "–")])
    return header, body


def markdown(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def write_csv(path, rows):
    """The tables with raw numbers (full precision, intervals as two columns): the LGIP
    columns when there are LGIP rows, the compositional ones when there are those."""
    lgip_rows = [row for row in rows if row.get("kind") != "compositional"]
    composition = [key for key, _label, _higher in compositional_columns(
        [row for row in rows if row.get("kind") == "compositional"])]
    with_intervals = [key for key, _label, _higher in METRICS] if lgip_rows else []
    with_intervals += composition + [f"blind_{key}" for key in composition]
    columns = ["model_tag", "input", "script", "spec", "num_images"]
    for key in with_intervals:
        columns += [key, f"{key}_ci_low", f"{key}_ci_high"]
    if lgip_rows:
        columns += [f"pos_rate_{t}" for t in flip_types_of(lgip_rows)] + ["i2t_r1", "t2i_r1"]
    columns.append("source")
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


def _save_png(figure, path):
    """PNG bytes written atomically."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    plt.close(figure)
    with atomic_output(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_frontier(rows, path):
    """Invariance error (x, lower is better) against sensitivity gap (y, higher is
    better), one labelled point per row with its interval bars, families in colour, the
    better corner marked. Returns the labels plotted, in order."""
    plt = _pyplot()
    points, seen = [], set()
    for row in rows:  # the same model on the same file from two scripts is one point
        identity = (row["model_tag"], row["input"], row["invariance_error"], row["sensitivity_gap"])
        if row["invariance_error"] is not None and row["sensitivity_gap"] is not None and identity not in seen:
            seen.add(identity)
            points.append(row)
    if not points:
        raise InputError("--plot-frontier: no row has both an invariance error and a sensitivity gap")
    figure, axes = plt.subplots(figsize=(7.5, 5.5))
    labels, used_families = [], {}
    several_inputs = len({row["input"] for row in points}) > 1
    for row in points:
        x, y = row["invariance_error"], row["sensitivity_gap"]
        x_low, x_high = row.get("invariance_error_ci") or (None, None)
        y_low, y_high = row.get("sensitivity_gap_ci") or (None, None)
        name = family(row["model_tag"], row.get("spec", ""))
        colour = FAMILY_COLOURS[name]
        axes.errorbar(x, y, xerr=None if x_low is None else [[x - x_low], [x_high - x]],
                      yerr=None if y_low is None else [[y - y_low], [y_high - y]], fmt="o", color=colour,
                      ecolor=colour, elinewidth=1, capsize=3, markersize=7, label=None if name in used_families else name)
        used_families[name] = colour
        label = row["model_tag"] + (f" ({row['input']})" if several_inputs else "")
        axes.annotate(label, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=7)
        labels.append(label)
    axes.axhline(0.0, color="#999999", linewidth=0.8, linestyle=":")
    axes.set_xlabel("invariance error (mean |Δ score| under paraphrase)  →  lower is better")
    axes.set_ylabel("sensitivity gap (mean score drop under a flip)  →  higher is better")
    axes.set_title("LGIP invariance–sensitivity frontier")
    axes.annotate("better", xy=(0.03, 0.97), xycoords="axes fraction", xytext=(0.18, 0.84), textcoords="axes fraction",
                  fontsize=9, color="#333333", ha="center", arrowprops={"arrowstyle": "->", "color": "#333333"})
    axes.legend(loc="lower right", fontsize=8, frameon=True)
    axes.grid(alpha=0.3)
    _save_png(figure, path)
    return labels


def plot_types(rows, path):
    """Positive rate per flip type, grouped bars per model, a line at chance (0.5).
    Returns {label: {flip type: positive rate}} as plotted."""
    plt = _pyplot()
    flip_types = flip_types_of(rows)
    typed = [row for row in rows if any(row.get(f"pos_rate_{t}") is not None for t in flip_types)]
    if not typed:
        raise InputError("--plot-types: no row has per-type positive rates (use run_lgip_by_fliptype.py's output)")
    several_inputs = len({row["input"] for row in typed}) > 1
    labels = [row["model_tag"] + (f" ({row['input']})" if several_inputs else "") for row in typed]
    width = 0.8 / max(1, len(flip_types))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.0 + 0.9 * len(typed)), 4.8))
    plotted = {label: {} for label in labels}
    colours = plt.get_cmap("tab10")
    for position, flip_type in enumerate(flip_types):
        values = [row.get(f"pos_rate_{flip_type}") for row in typed]
        centres = np.arange(len(typed)) + (position - (len(flip_types) - 1) / 2) * width
        heights = [np.nan if value is None else value for value in values]
        errors = []
        for row, value in zip(typed, values):
            low, high = row.get(f"pos_rate_{flip_type}_ci") or (None, None)
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
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.grid(axis="y", alpha=0.3)
    _save_png(figure, path)
    return plotted


# ---------------------------------------------------------------------------
# Diff and correlation
# ---------------------------------------------------------------------------

def diff_rows(rows_a, rows_b):
    """Pairs of rows matched by model tag (and script), in A's order."""
    by_key = {(row["model_tag"], row["script"]): row for row in rows_b}
    pairs = [(row, by_key[(row["model_tag"], row["script"])]) for row in rows_a if (row["model_tag"], row["script"]) in by_key]
    if not pairs:
        raise InputError("--diff: no model tag appears in both A and B")
    return pairs


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
    header = ["model", "metric", "A", "B", "B − A", "95% CIs overlap"]
    body = []
    for row_a, row_b in pairs:
        for key, label in metrics:
            a, b = row_a.get(key), row_b.get(key)
            if a is None and b is None:
                continue
            overlap = intervals_overlap(row_a.get(f"{key}_ci"), row_b.get(f"{key}_ci"))
            body.append([row_a["model_tag"], label, fmt(a), fmt(b), "–" if a is None or b is None else f"{b - a:+.4f}",
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
    parser.add_argument("--csv", metavar="PATH", help="also write the table as CSV (full precision)")
    parser.add_argument("--plot-frontier", metavar="PATH.png", help="invariance error vs sensitivity gap, one point per model")
    parser.add_argument("--plot-types", metavar="PATH.png", help="positive rate per flip type per model, bars")
    parser.add_argument("--diff", nargs=2, metavar=("A", "B"),
                        help="two metric files or folders side by side, matched by model tag, with deltas")
    parser.add_argument("--correlate", action="store_true",
                        help="rank correlation across models between retrieval R@1 and each LGIP metric")
    args = parser.parse_args()
    if not args.inputs and not args.diff:
        parser.error("give metric files/folders, or --diff A B")
    return args


def main():
    args = parse_args()
    if args.diff:
        header, body = diff_table(diff_rows(load_rows([args.diff[0]]), load_rows([args.diff[1]])))
        print(f"A = {args.diff[0]}\nB = {args.diff[1]}\n")
        print(markdown(header, body))
        if not args.inputs:
            return
    rows = load_rows(args.inputs)
    lgip_rows = [row for row in rows if row.get("kind") not in ("compositional", "matching")]
    compositional_rows = [row for row in rows if row.get("kind") == "compositional"]
    matching_rows = [row for row in rows if row.get("kind") == "matching"]
    if lgip_rows:
        print(markdown(*table(lgip_rows)))
    if compositional_rows:
        print(("\n" if lgip_rows else "") + "Compositional probes (run_compositional.py; blind: the image replaced by "
              "the mean image embedding):\n")
        print(markdown(*compositional_table(compositional_rows)))
    if matching_rows:
        print(("\n" if lgip_rows or compositional_rows else "") + "Zero-shot against systematic accuracy "
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
    if args.correlate:
        print("\nSpearman rank correlation across models (retrieval vs LGIP):")
        for (retrieval_label, label), (rho, count) in correlations(lgip_rows).items():
            shown = "– (needs 3+ models with both)" if rho is None else f"{rho:+.3f}"
            print(f"  {retrieval_label:>15} vs {label:<17} rho = {shown}  (n={count})")


if __name__ == "__main__":
    run_cli(main)
