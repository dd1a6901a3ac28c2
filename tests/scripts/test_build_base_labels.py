"""build_base_jsonl.py --labels: COCO's instance categories added to the base set, as a
user runs it, on a small captions file and a small instances file the test writes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# image id -> [(category id, area)]; 3 has none, 4 ties on area (lower id wins).
INSTANCES = {1: [(18, 500.0), (17, 200.0), (17, 250.0)], 2: [(1, 40.0)], 3: [], 4: [(3, 100.0), (2, 100.0)]}
CATEGORIES = {1: "person", 2: "bicycle", 3: "car", 17: "cat", 18: "dog"}


def write_coco(folder: Path, instances=INSTANCES):
    images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in instances]
    captions = [{"id": 10 * i + k, "image_id": i, "caption": f"image {i} caption {k}"} for i in instances for k in range(5)]
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))
    annotations = [{"id": 100 * i + k, "image_id": i, "category_id": c, "area": a}
                   for i, found in instances.items() for k, (c, a) in enumerate(found)]
    categories = [{"id": c, "name": n, "supercategory": "x"} for c, n in CATEGORIES.items()]
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                      "categories": categories}))


def run(*args):
    return subprocess.run([sys.executable, str(REPO / "build_base_jsonl.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=str(REPO))


def test_labels_are_the_largest_category_and_every_category(tmp_path):
    write_coco(tmp_path)
    out = tmp_path / "base.jsonl"
    result = run("--captions", tmp_path / "captions.json", "--images", tmp_path / "img", "--output", out,
                 "--n", 4, "--labels", tmp_path / "instances.json")
    assert result.returncode == 0, result.stderr
    records = {r["image_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    # Image 1: dog covers 500, cat 200 + 250 = 450, so dog; both present, in category-id order.
    assert (records[1]["label"], records[1]["labels"]) == ("dog", ["cat", "dog"])
    assert (records[2]["label"], records[2]["labels"]) == ("person", ["person"])
    assert (records[3]["label"], records[3]["labels"]) == (None, [])
    assert (records[4]["label"], records[4]["labels"]) == ("bicycle", ["bicycle", "car"])
    assert "3 images labelled, 1 without any instance" in result.stdout


def test_without_labels_the_file_is_unchanged(tmp_path):
    write_coco(tmp_path)
    plain, labelled = tmp_path / "plain.jsonl", tmp_path / "labelled.jsonl"
    common = ["--captions", tmp_path / "captions.json", "--images", tmp_path / "img", "--n", 4]
    assert run(*common, "--output", plain).returncode == 0
    assert run(*common, "--output", labelled, "--labels", tmp_path / "instances.json").returncode == 0
    for line, labelled_line in zip(plain.read_text().splitlines(), labelled.read_text().splitlines()):
        record = json.loads(labelled_line)
        assert "label" not in json.loads(line)
        del record["label"], record["labels"]
        assert json.loads(line) == record


def test_bad_instances_file_is_one_error_and_no_output(tmp_path):
    write_coco(tmp_path)
    out = tmp_path / "base.jsonl"
    (tmp_path / "bad.json").write_text(json.dumps({"annotations": []}))
    result = run("--captions", tmp_path / "captions.json", "--images", tmp_path / "img", "--output", out, "--n", 4,
                 "--labels", tmp_path / "bad.json")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'bad.json'}: not COCO's instances format: "
                                                  f"the top-level object has no 'categories' list"]
    assert not out.exists()
    payload = json.loads((tmp_path / "instances.json").read_text())
    payload["annotations"][0]["category_id"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(payload))
    result = run("--captions", tmp_path / "captions.json", "--images", tmp_path / "img", "--output", out, "--n", 4,
                 "--labels", tmp_path / "bad.json")
    assert result.returncode == 2 and "annotations[0]: category_id 99 is not in 'categories'" in result.stderr
    assert not out.exists()
