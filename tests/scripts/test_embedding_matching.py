"""run_embedding_matching.py as a user runs it, on the session's tiny open_clip and tiny
SigLIP and on drawn images: an image folder of three classes and a labelled JSONL. Few
steps and small sizes; the runs that do not depend on each other go side by side.

One open_clip run is killed (SIGKILL) as soon as its first checkpoint shard exists and
started again: its metric file must equal a clean run's, timings aside."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lgip.io import InputError
from lgip.tiny import draw_images
from tests.helpers import run_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "run_embedding_matching.py"
CLASSES = ["bus", "cat", "dog"]
IMAGES_PER_CLASS = 3
SIGMAS = ["0.02", "0.08"]
COMMON = ["--steps", "40", "--lr", "1.0", "--noise-sigmas", *SIGMAS, "--noise-draws", "3", "--pair-batch-size", "2",
          "--sources-per-class", "2", "--workers", "0", "--bootstrap", "50", "--quiet", "--device", "cpu",
          "--checkpoint-seconds", "0"]
NUM_PAIRS = len(CLASSES) * 2 * (len(CLASSES) - 1)
# One intra-op thread: the tiny models gain nothing from more, and on a shared machine
# threads that wait on each other make a run many times slower.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def command(*args):
    return [sys.executable, str(REPO / SCRIPT), *map(str, args)]


def start(*args):
    return subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            cwd=str(REPO))


def finish(process):
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, f"{SCRIPT} failed ({process.returncode}):\n{stdout}\n{stderr}"
    return stdout


def metric_file(folder: Path, stem: str, spec: str):
    """The one per-model metric file in `folder` (there is one model per run here)."""
    found = [path for path in folder.glob(f"{stem}__MATCHING_*.metrics.json") if not path.name.endswith("_ALL.metrics.json")]
    assert len(found) == 1, found
    metrics = json.loads(found[0].read_text())
    assert metrics["config"]["spec"] == spec
    return metrics


def without_timings(metrics):
    metrics = json.loads(json.dumps(metrics))
    del metrics["config"]["timings_seconds"]
    return metrics


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Drawn images in an image folder (a subfolder per class) and a labelled JSONL of the
    same images with relative paths and one record whose label is null."""
    root = tmp_path_factory.mktemp("matching")
    records = []
    for index, name in enumerate(CLASSES):
        for path in draw_images(root / "images" / name, IMAGES_PER_CLASS, seed=10 + index):
            records.append({"image_path": os.path.relpath(path, root), "label": name})
    records.append({"image_path": records[0]["image_path"], "label": None})
    jsonl = root / "labelled.jsonl"
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in records))
    return SimpleNamespace(root=root, folder=root / "images", jsonl=jsonl)


@pytest.fixture(scope="module")
def world(tiny, drawn):
    """The runs: a clean open_clip run on the folder, the same run killed and resumed,
    and a SigLIP run on the JSONL with --box pixel01 --eps-linf --optimizer adam."""
    root, jsonl = drawn.root, drawn.jsonl
    world = SimpleNamespace(root=root, folder=drawn.folder, jsonl=jsonl, openclip=tiny.openclip, siglip=tiny.siglip)

    openclip_args = ["--input", world.folder, "--models", tiny.openclip, "--cache-dir", root / "cache", *COMMON,
                     "--examples", "1", "--jacobian", "1"]
    clean = start(*openclip_args, "--output-dir", root / "clean")
    siglip = start("--input", jsonl, "--models", tiny.siglip, "--cache-dir", root / "cache", *COMMON, "--examples", "0",
                   "--box", "pixel01", "--eps-linf", "0.01", "--optimizer", "adam", "--lr", "0.01",
                   "--output-dir", root / "siglip")
    killed = start(*openclip_args, "--output-dir", root / "resumed")
    try:
        deadline = time.monotonic() + 300
        while not list((root / "resumed").glob("*.checkpoint-*/records-*.npz")):
            assert killed.poll() is None, "the run ended before it wrote a checkpoint shard:\n" + killed.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
        world.killed_early = not list((root / "resumed").glob("*.metrics.json"))
        world.clean_output = finish(clean)
        world.resumed_output = finish(start(*openclip_args, "--output-dir", root / "resumed"))
        world.siglip_output = finish(siglip)
    finally:
        for process in (clean, siglip, killed):
            if process.poll() is None:
                process.kill()
                process.communicate()
    return world


def test_metric_keys_and_their_ranges(world):
    metrics = metric_file(world.root / "clean", "images", world.openclip)
    for key in ("zero_shot_accuracy", "systematic_accuracy", "target_rate"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["num_pairs"] == NUM_PAIRS and metrics["counts"]["images"] == len(CLASSES) * IMAGES_PER_CLASS
    perturbation = metrics["perturbation"]
    assert 0.0 < perturbation["linf_mean"] <= perturbation["linf_max"]
    assert perturbation["l2_mean"] > 0 and perturbation["psnr_mean"] > 0
    assert metrics["descent"]["steps_max"] <= 40 and 0.0 <= metrics["descent"]["converged_share"] <= 1.0
    detection = metrics["detection"]
    assert [entry["sigma"] for entry in detection["per_sigma"]] == [float(s) for s in SIGMAS]
    for entry in detection["per_sigma"]:
        for statistic in ("embedding_shift", "label_agreement"):
            assert 0.0 <= entry[statistic]["auc"] <= 1.0 and 0.0 <= entry[statistic]["tpr_at_fpr"] <= 1.0
    for statistic, best in detection["best"].items():
        assert best["auc"] == max(entry[statistic]["auc"] for entry in detection["per_sigma"])
    confusion = metrics["confusion"]
    assert confusion["classnames"] == CLASSES
    assert [sum(row) for row in confusion["matrix"]] == [NUM_PAIRS // len(CLASSES)] * len(CLASSES)
    low, high = metrics["ci95"]["target_rate"]
    assert low <= metrics["target_rate"] <= high
    assert metrics["config"]["script"] == SCRIPT and metrics["config"]["matching"]["box"] == "normalized"
    spectrum = metrics["jacobian"]["singular_values_original"][0]
    assert len(spectrum) == 64 and spectrum == sorted(spectrum, reverse=True)  # the tiny CLIP's 64-d features
    for suffix in ("example_0.png", "detection_auc.png", "jacobian.png"):
        picture = world.root / "clean" / f"images__MATCHING_{metrics['model_tag']}.{suffix}"
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", suffix
    assert not list((world.root / "clean").glob("*.checkpoint-*"))  # removed once the metric file is written


def test_a_killed_run_resumes_to_the_same_metric_file(world):
    assert world.killed_early, "the run finished before it was killed: nothing was resumed"
    assert f"of {NUM_PAIRS} pairs already finished" in world.resumed_output
    clean = metric_file(world.root / "clean", "images", world.openclip)
    resumed = metric_file(world.root / "resumed", "images", world.openclip)
    assert without_timings(resumed) == without_timings(clean)  # the same seed, the same pairs, the same numbers


def test_siglip_pixel_box_respects_the_bound(world):
    metrics = metric_file(world.root / "siglip", "labelled", world.siglip)
    assert metrics["perturbation"]["linf_max"] <= 0.01 + 1e-6  # in [0, 1] pixels, up to float32 rounding
    assert metrics["perturbation"]["linf_max"] > 0.005  # it moved: the step reaches the bound
    assert metrics["counts"]["images_unlabelled_skipped"] == 1 and metrics["num_pairs"] == NUM_PAIRS
    assert metrics["config"]["matching"]["optimizer"] == "adam" and metrics["config"]["backend"] == "hf"
    for key in ("zero_shot_accuracy", "target_rate"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["systematic_accuracy"] is None or 0.0 <= metrics["systematic_accuracy"] <= 1.0
    every = json.loads((world.root / "siglip" / "labelled__MATCHING_ALL.metrics.json").read_text())
    assert [entry["model_tag"] for entry in every] == [metrics["model_tag"]]


def test_one_class_is_one_error_line_before_any_model_is_loaded(tmp_path):
    draw_images(tmp_path / "images" / "cat", 2)
    (tmp_path / "empty").mkdir()
    # A model folder that cannot be loaded: were it loaded first, the error would be about it.
    result = subprocess.run(command("--input", tmp_path / "images", "--models", f"hf:{tmp_path / 'empty'}",
                                    "--device", "cpu"), capture_output=True, text=True, env=ENV, cwd=str(REPO))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "1 class" in lines[0], result.stderr


def test_an_unreadable_image_is_an_error_with_strict_before_any_descent(tiny_models, tmp_path):
    draw_images(tmp_path / "images" / "cat", 2)
    draw_images(tmp_path / "images" / "dog", 2, seed=1)
    broken = tmp_path / "images" / "dog" / "img_001.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    result = run_script(SCRIPT, "--input", tmp_path / "images", "--models", tiny_models.openclip, "--device", "cpu",
                        "--strict", "--quiet", "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {broken}: image {broken} could not be read"), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra,message", [
    (["--classnames", "CLASSNAMES"], "1 class(es) have no image"),
    (["--limit", "3"], "every image is of one class (bus)"),
    (["--classnames", "CLASSES", "--limit", "4"], "1 class(es) have no image among the first 4 (dog)"),
    (["--templates", "a photo"], "has no {} for the class name"),
])
def test_bad_input_is_refused_before_any_model_is_loaded(drawn, extra, message, tmp_path):
    import run_embedding_matching

    files = {"CLASSNAMES": CLASSES + ["zebra"], "CLASSES": CLASSES}
    for name, lines in files.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    extra = [str(tmp_path / value) if value in files else value for value in extra]
    with pytest.raises(InputError) as caught:
        (tmp_path / "empty").mkdir()
        run_embedding_matching.main(["--input", str(drawn.folder), "--models", f"hf:{tmp_path / 'empty'}",
                                     "--device", "cpu", *extra])
    assert message in str(caught.value)


def test_the_report_shows_zero_shot_against_systematic_accuracy(world):
    clean = metric_file(world.root / "clean", "images", world.openclip)
    siglip = metric_file(world.root / "siglip", "labelled", world.siglip)
    result = subprocess.run([sys.executable, str(REPO / "lgip_report.py"), world.root / "clean", world.root / "siglip"],
                            capture_output=True, text=True, cwd=str(REPO))
    assert result.returncode == 0, result.stderr
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in result.stdout.splitlines()
             if line.startswith("| ")]
    assert table[0][:4] == ["model", "input", "zero-shot acc. [95% CI]", "systematic acc. [95% CI]"]
    rows = {cells[0]: cells for cells in table[1:]}
    for metrics in (clean, siglip):
        cells = rows[metrics["model_tag"]]
        assert cells[2].startswith(f"{metrics['zero_shot_accuracy']:.3f} [")
        best = max(entry["auc"] for entry in metrics["detection"]["best"].values())
        assert cells[5].startswith(f"{best:.3f} (") and cells[7] == str(NUM_PAIRS)
