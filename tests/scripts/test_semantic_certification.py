"""run_semantic_certification.py as a user runs it: an image folder and a labelled JSONL,
the tiny open_clip and SigLIP models through their spec strings, the embedding cache,
the interval dump, and the one-line errors for bad input."""
import json
import shutil

import numpy as np
import pytest

from lgip.probes.certify import certify, transform_embeddings
from lgip.tiny import draw_images
from tests.helpers import cache_files, read_jsonl, run_script, without_timings, write_jsonl

CLASSES = {"cat": 1, "dog": 2, "car": 3}  # class -> seed of its drawn images
EDITS = {"size": ["a photo of a tiny {}.", "a photo of a huge {}."], "scene": ["a photo of a {} on a plate."]}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """An ImageFolder with three classes of four drawn images, a JSONL over the same
    images (one record with a null label), and an edits file."""
    root = tmp_path_factory.mktemp("certify")
    for name, seed in CLASSES.items():
        draw_images(root / "folder" / name, 4, seed=seed)
    records = [{"image_path": f"folder/{name}/img_{i:03d}.jpg", "label": name} for name in CLASSES for i in range(4)]
    records.insert(3, {"image_path": "folder/cat/img_000.jpg", "label": None})
    write_jsonl(root / "labelled.jsonl", records)
    (root / "edits.json").write_text(json.dumps(EDITS), encoding="utf-8")
    return root


def certify_run(root, spec, *extra, input_name="folder"):
    out = root / "out"
    result = run_script("run_semantic_certification.py", "--input", root / input_name, "--models", spec,
                        "--edits", root / "edits.json", "--bootstrap", "50", "--quiet", "--output-dir", out, *extra)
    return result, out


def test_an_unreadable_image_is_skipped_and_counted_or_an_error_with_strict(tiny_models, labelled, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(labelled, root)
    broken = root / "folder" / "dog" / "img_001.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    result, out = certify_run(root, tiny_models.openclip, "--budgets", "0")
    assert result.returncode == 0, result.stderr
    assert f"warning: {broken}: image {broken} could not be read" in result.stderr
    [metric_file] = out.glob("folder__CERTIFY_*.metrics.json")
    metrics = json.loads(metric_file.read_text())
    assert metrics["num_samples"] == 11 and metrics["num_skipped_images"] == 1
    result, _ = certify_run(root, tiny_models.openclip, "--budgets", "0", "--strict", "--output-dir", tmp_path / "strict")
    assert result.returncode == 2 and result.stderr.startswith(f"error: {broken}: image {broken} could not be read")
    assert not (tmp_path / "strict").exists()


@pytest.mark.parametrize("which", ["openclip", "siglip"])
def test_certification_end_to_end_and_a_rerun_encodes_nothing(tiny_models, labelled, which, tmp_path):
    spec = getattr(tiny_models, which)
    root = tmp_path / "run"
    shutil.copytree(labelled, root)
    dump = root / "intervals.jsonl"
    result, out = certify_run(root, spec, "--dump-intervals", dump, "--budgets", "0", "0.05")
    assert result.returncode == 0, result.stderr
    [metric_file] = out.glob("folder__CERTIFY_*.metrics.json")
    metrics = json.loads(metric_file.read_text())
    assert metrics["num_samples"] == 12 and metrics["num_classes"] == 3 and metrics["config"]["spec"] == spec
    assert 0 <= metrics["zero_shot_accuracy"] <= 1 and metrics["transform"] == "rotate"
    strict, loose = metrics["by_budget"]["0"], metrics["by_budget"]["0.05"]
    assert set(strict["families"]) == set(EDITS)
    assert set(strict["families"]["size"]["edits"]) == set(EDITS["size"])
    # A larger budget never lengthens a certified extent, so no summary can grow.
    assert loose["mean_certified_extent"] <= strict["mean_certified_extent"] + 1e-12
    for level, accuracy in strict["certified_accuracy"].items():
        assert loose["certified_accuracy"][level] <= accuracy <= metrics["zero_shot_accuracy"] + 1e-12
    assert "by_budget.0.families.scene.mean_certified_extent" in metrics["ci95"]

    rows = read_jsonl(dump)
    assert len(rows) == 12 * 3 * 2  # images x edits x budgets
    for row in rows:
        starts = [start for start, _end, _cls in row["intervals"]]
        ends = [end for _start, end, _cls in row["intervals"]]
        assert starts[0] == 0 and ends[-1] == 1 and starts[1:] == ends[:-1]
        assert row["intervals"][0][2] in (row["predicted"], None)
        assert (len(row["intervals"]) > 1) == bool(row["nearest_past_boundary"])
        assert row["edit"] in EDITS[row["family"]] and row["image_path"].startswith(row["label"] + "/")

    report = run_script("lgip_report.py", metric_file, "--plot-certified", root / "certified.png")
    assert report.returncode == 0, report.stderr
    [row] = [line for line in report.stdout.splitlines() if line.startswith(f"| {metrics['model_tag']} |")]
    assert f"| {metrics['zero_shot_accuracy']:.3f} [" in row and "| folder | rotate |" in row
    assert (root / "certified.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    shards = cache_files(root / ".lgip_cache", "images") + cache_files(root / ".lgip_cache", "texts")
    again, _ = certify_run(root, spec, "--dump-intervals", dump, "--budgets", "0", "0.05")
    assert again.returncode == 0, again.stderr
    assert cache_files(root / ".lgip_cache", "images") + cache_files(root / ".lgip_cache", "texts") == shards
    assert without_timings(json.loads(metric_file.read_text())) == without_timings(metrics)


def test_the_metric_file_matches_the_solver_on_the_same_embeddings(tiny_models, labelled, tmp_path, openclip_model):
    """The script's numbers are the solver's on the model's own embeddings, and the dump's
    nearest images are the ones nearest the transformed embedding."""
    from lgip.engine import EvalSettings
    from lgip.engine.embed import embed_images, embed_texts
    from lgip.labelled import read_labelled
    from lgip.probes.zeroshot import class_embeddings

    root = tmp_path / "run"
    shutil.copytree(labelled, root)
    result, out = certify_run(root, tiny_models.openclip, "--input", root / "labelled.jsonl", "--budgets", "0",
                              "--transform", "slerp", "--dump-intervals", root / "d.jsonl")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(next(out.glob("labelled__CERTIFY_*.metrics.json")).read_text())
    images = read_labelled(str(root / "labelled.jsonl"))
    assert images.num_unlabelled == 1 and metrics["num_samples"] == 12
    settings = EvalSettings(device="cpu", cache_dir=None, progress=False, workers=0)
    embeddings, _ = embed_images(openclip_model, images.image_paths, settings)
    classes = class_embeddings(openclip_model, images.classnames, ["a photo of a {}."], settings)
    templates = [t for group in EDITS.values() for t in group]
    targets = embed_texts(openclip_model, [t.replace("{}", c) for t in templates for c in images.classnames], settings)
    targets = targets.reshape(len(templates), len(images.classnames), -1)
    [solved] = certify(embeddings, classes, targets, transform="slerp")
    correct = solved.predicted == np.array(images.labels)
    assert metrics["zero_shot_accuracy"] == pytest.approx(correct.mean())
    expected = solved.extent[correct].mean() if correct.any() else None
    assert metrics["by_budget"]["0"]["mean_certified_extent"] == pytest.approx(expected, abs=1e-5)
    for row in read_jsonl(root / "d.jsonl"):
        if not row["nearest_past_boundary"]:
            continue
        image = [s.image_path for s in images.sources].index(row["image_path"])
        edit = templates.index(row["edit"])
        phi = min(1.0, row["intervals"][0][1] + 1e-3)
        moved = transform_embeddings(embeddings[[image]], classes[[solved.predicted[image]]],
                                     targets[edit][[solved.predicted[image]]], phi, "slerp")[0]
        similarity = embeddings @ moved
        similarity[image] = -np.inf
        best = [images.sources[j].image_path for j in np.argsort(-similarity, kind="stable")[:3]]
        assert [near["image_path"] for near in row["nearest_past_boundary"]] == best


@pytest.mark.parametrize("case, message", [
    ("no_label", "labelled.jsonl:2: record has no 'label'"),
    ("unknown_label", "labelled.jsonl:1: label 'cat' is not in the class names"),
    ("edit_without_slot", "edits.json: edit family 'size': template 'a photo' has no {} for the class name"),
    ("one_class", "1 class(es) (cat); zero-shot classification here needs at least 2"),
    ("empty_class_folder", "folder/dog: class folder holds no image files"),
    ("template_without_slot", "template 'a photo' has no {} for the class name"),
    ("negative_budget", "argument --budgets: expected a finite number of at least 0, got '-0.1'"),
])
def test_bad_input_is_one_error_line_before_any_work(tiny_models, labelled, tmp_path, case, message):
    root = tmp_path / "run"
    shutil.copytree(labelled, root)
    extra, input_name = [], "folder"
    if case == "no_label":
        write_jsonl(root / "labelled.jsonl", [{"image_path": "folder/cat/img_000.jpg", "label": "cat"},
                                              {"image_path": "folder/dog/img_000.jpg"}])
        input_name = "labelled.jsonl"
    elif case == "unknown_label":
        (root / "names.txt").write_text("dog\ncar\n")
        extra, input_name = ["--classnames", root / "names.txt"], "labelled.jsonl"
    elif case == "edit_without_slot":
        (root / "edits.json").write_text(json.dumps({"size": ["a photo"]}))
    elif case == "one_class":
        for name in ("dog", "car"):
            shutil.rmtree(root / "folder" / name)
    elif case == "empty_class_folder":
        for image in (root / "folder" / "dog").iterdir():
            image.unlink()
    elif case == "template_without_slot":
        extra = ["--templates", "a photo"]
    elif case == "negative_budget":
        extra = ["--budgets", "-0.1"]
    result, out = certify_run(root, tiny_models.openclip, *extra, input_name=input_name)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()  # argparse's own refusals come after its usage lines
    assert [line for line in lines if "error:" in line] == [lines[-1]] and message in lines[-1], result.stderr
    assert len(lines) == 1 or case == "negative_budget"
    assert not (root / ".lgip_cache").exists() and not out.exists()
