"""The probes' PNG figures: an embedding-matching pair (original, matched, their
difference amplified), detection AUC against the noise level, and Jacobian spectra as
the matching paper's Figure 3 shows them. matplotlib on its file-only backend; each
file is written atomically.
"""
from __future__ import annotations

import io

import numpy as np

from lgip.io import atomic_output

DPI = 120
SPECTRUM_COLOURS = "tab10"


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path: str) -> None:
    """The figure as a PNG at `path`, written atomically; the figure is closed."""
    plt = pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    with atomic_output(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _image(pixels01) -> np.ndarray:
    """[3, H, W] pixels in [0, 1] (tensor or array) -> [H, W, 3] for imshow."""
    array = np.asarray(pixels01.detach().cpu() if hasattr(pixels01, "detach") else pixels01, dtype=np.float64)
    return np.clip(array.transpose(1, 2, 0), 0.0, 1.0)


def example_pair(path: str, original01, matched01, original_caption: str, matched_caption: str, title: str) -> float:
    """Original, matched image and their difference side by side, each captioned; the
    difference is shown around mid-grey, amplified so its largest element spans half the
    range. Returns the amplification."""
    plt = pyplot()
    original, matched = _image(original01), _image(matched01)
    difference = matched - original
    largest = float(np.abs(difference).max())
    gain = 0.5 / largest if largest > 0 else 1.0
    figure, axes = plt.subplots(1, 3, figsize=(9.0, 3.6))
    panels = [(original, original_caption), (matched, matched_caption),
              (np.clip(0.5 + gain * difference, 0.0, 1.0), f"difference x{gain:.0f}\n(largest change {largest:.4f})")]
    for ax, (image, caption) in zip(axes, panels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    figure.suptitle(title, fontsize=10)
    save_png(figure, path)
    return gain


def detection_auc(path: str, detection: dict) -> None:
    """ROC AUC of each noise statistic against sigma (from detection_report), with the
    chance line at 0.5."""
    plt = pyplot()
    per_sigma = detection["per_sigma"]
    sigmas = [entry["sigma"] for entry in per_sigma]
    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    for name in detection["best"]:
        axes.plot(sigmas, [entry[name]["auc"] for entry in per_sigma], marker="o", label=name.replace("_", " "))
    axes.axhline(0.5, color="#999999", linestyle="--", linewidth=1, label="chance")
    if len(sigmas) > 1 and min(sigmas) > 0:
        axes.set_xscale("log")
    axes.set_ylim(0.0, 1.02)
    _finish(figure, axes, path, "noise sigma ([0, 1] pixels)", "ROC AUC, matched vs natural",
            "Detecting matched images by adding noise")


def jacobian_spectra(path: str, at_original: np.ndarray, at_matched: np.ndarray) -> None:
    """Singular values (descending, log scale) of the image tower's Jacobian, one colour
    per image: solid at the original, dashed at the matched image."""
    plt = pyplot()
    colours = plt.get_cmap(SPECTRUM_COLOURS)
    figure, axes = plt.subplots(figsize=(6.0, 4.0))
    index = np.arange(1, at_original.shape[1] + 1)
    for row in range(at_original.shape[0]):
        colour = colours(row % 10)
        axes.plot(index, at_original[row], color=colour, label="original" if row == 0 else None)
        axes.plot(index, at_matched[row], color=colour, linestyle="--", label="matched" if row == 0 else None)
    axes.set_yscale("log")
    _finish(figure, axes, path, "index", "singular value", "Singular values of the image encoder's Jacobian")


def _finish(figure, axes, path: str, xlabel: str, ylabel: str, title: str) -> None:
    """Labels, title, legend and grid of a line plot, then the PNG."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    save_png(figure, path)
