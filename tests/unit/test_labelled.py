"""Labelled images (JSONL or image folder), class names, templates and edit families:
what is read, and the one-line errors for what is wrong."""
import json
import os

import pytest
from PIL import Image

from lgip.io import InputError
from lgip.labelled import (DEFAULT_EDITS, DEFAULT_TEMPLATE, Source, fill_template, read_classnames, read_edits,
                           read_labelled, read_templates, report_unreadable_images)


def draw(path, colour=(200, 30, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return str(path)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_jsonl_resolves_paths_and_indexes_labels(tmp_path):
    draw(tmp_path / "images" / "a.png")
    absolute = draw(tmp_path / "elsewhere" / "b.png")
    jsonl = write_jsonl(tmp_path / "set.jsonl", [
        {"image_path": "images/a.png", "label": "tench", "orig_captions": ["ignored"]},
        {"image_path": absolute, "label": "church", "labels": ["church", "person"]},
        {"image_path": "images/a.png", "label": "tench"},
    ])
    images = read_labelled(jsonl)
    assert images.classnames == ["church", "tench"]
    assert images.labels == [1, 0, 1]
    assert images.image_paths == [str(tmp_path / "images" / "a.png"), absolute, str(tmp_path / "images" / "a.png")]
    assert images.sources[0] == Source(jsonl, 1, "images/a.png") and str(images.sources[1]) == f"{jsonl}:2"
    paths, labels, classnames, sources, num_unlabelled = images   # the five parts, as a tuple
    assert len(sources) == 3 and num_unlabelled == 0


def test_classnames_file_sets_order_and_extra_competitors(tmp_path):
    jsonl = write_jsonl(tmp_path / "set.jsonl", [{"image_path": "a.png", "label": "tench"},
                                                 {"image_path": "b.png", "label": "church"}])
    names = tmp_path / "names.txt"
    names.write_text("tench\n\n  golf ball \nchurch\n", encoding="utf-8")
    images = read_labelled(jsonl, classnames_file=str(names))
    assert images.classnames == ["tench", "golf ball", "church"]
    assert images.labels == [0, 2]


@pytest.mark.parametrize("record, message", [
    ({"image_path": "a.png"}, "set.jsonl:2: record has no 'label'"),
    ({"image_path": "a.png", "label": 3}, "set.jsonl:2: 'label' must be a class name, got 3"),
    ({"image_path": "a.png", "label": " "}, "set.jsonl:2: 'label' must be a class name"),
    ({"label": "tench"}, "set.jsonl:2: record has no 'image_path'"),
])
def test_jsonl_record_errors_name_file_and_line(tmp_path, record, message):
    jsonl = write_jsonl(tmp_path / "set.jsonl", [{"image_path": "b.png", "label": "tench"}, record])
    with pytest.raises(InputError, match=message):
        read_labelled(jsonl)


def test_null_labels_are_skipped_and_counted(tmp_path):
    """build_base_jsonl.py --labels writes `label: null` for a COCO image without any
    instance: such a record has no class, so it is left out and counted."""
    jsonl = write_jsonl(tmp_path / "set.jsonl", [{"image_path": "a.png", "label": None},
                                                 {"image_path": "b.png", "label": "tench", "labels": ["tench"]},
                                                 {"image_path": "c.png", "label": None}])
    images = read_labelled(jsonl)
    assert images.labels == [0] and images.num_unlabelled == 2 and images.sources[0].line == 2
    only_null = write_jsonl(tmp_path / "none.jsonl", [{"image_path": "a.png", "label": None}])
    with pytest.raises(InputError, match=r"none.jsonl: no labelled image \(1 record\(s\) with a null label\)"):
        read_labelled(only_null)


def test_unknown_label_names_record_and_classnames_file(tmp_path):
    jsonl = write_jsonl(tmp_path / "set.jsonl", [{"image_path": "a.png", "label": "tench"},
                                                 {"image_path": "b.png", "label": "parachute"}])
    names = tmp_path / "names.txt"
    names.write_text("tench\nchurch\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_labelled(jsonl, classnames_file=str(names))
    assert str(err.value).startswith(f"{jsonl}:2: label 'parachute' is not in the class names")
    assert str(names) in str(err.value)


def test_classnames_file_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="empty class list"):
        read_classnames(str(empty))
    twice = tmp_path / "twice.txt"
    twice.write_text("tench\nchurch\ntench\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"twice.txt:3: class name 'tench' given twice \(first on line 1\)"):
        read_classnames(str(twice))
    with pytest.raises(InputError, match="no such class-name file"):
        read_classnames(str(tmp_path / "missing.txt"))


def test_image_folder(tmp_path):
    root = tmp_path / "imagenette"
    draw(root / "tench" / "n1.png")
    draw(root / "tench" / "nested" / "n0.JPG")
    (root / "tench" / "notes.txt").write_text("not an image")
    draw(root / "church" / "c1.webp")
    draw(root / ".thumbnails" / "x.png")          # hidden: not a class
    draw(root / "church" / ".cache" / "y.png")     # hidden: not an image of the class
    images = read_labelled(str(root))
    assert images.classnames == ["church", "tench"]
    assert images.labels == [0, 1, 1]
    written = [os.path.join("church", "c1.webp"), os.path.join("tench", "n1.png"), os.path.join("tench", "nested", "n0.JPG")]
    assert [s.image_path for s in images.sources] == written
    assert images.image_paths == [os.path.join(str(root), w) for w in written]
    assert all(os.path.isfile(p) for p in images.image_paths)
    assert images.sources[0].line is None and str(images.sources[0]) == os.path.join(str(root), written[0])


def test_image_folder_errors(tmp_path):
    root = tmp_path / "food"
    draw(root / "gyoza" / "1.png")
    os.makedirs(root / "samosa")
    (root / "samosa" / "readme.md").write_text("no images here")
    with pytest.raises(InputError, match=r"samosa: class folder holds no image files"):
        read_labelled(str(root))
    bare = tmp_path / "bare"
    os.makedirs(bare)
    with pytest.raises(InputError, match="no class folders .* an empty class list"):
        read_labelled(str(bare))
    names = tmp_path / "names.txt"
    names.write_text("gyoza\n", encoding="utf-8")
    draw(root / "samosa" / "2.png")
    with pytest.raises(InputError, match=r"samosa: folder 'samosa' is not in the class names"):
        read_labelled(str(root), classnames_file=str(names))


def test_too_few_classes_when_the_caller_needs_more(tmp_path):
    root = tmp_path / "one"
    draw(root / "gyoza" / "1.png")
    assert read_labelled(str(root)).classnames == ["gyoza"]
    with pytest.raises(InputError, match=r"1 class\(es\) \(gyoza\); zero-shot classification here needs at least 2"):
        read_labelled(str(root), min_classes=2)
    names = tmp_path / "names.txt"
    names.write_text("gyoza\nsamosa\n", encoding="utf-8")
    assert read_labelled(str(root), classnames_file=str(names), min_classes=2).classnames == ["gyoza", "samosa"]


def test_missing_input(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_labelled(str(tmp_path / "nowhere"))


def test_templates(tmp_path):
    assert read_templates(DEFAULT_TEMPLATE) == ["a photo of a {}."]
    listed = tmp_path / "templates.txt"
    listed.write_text("a photo of a {}.\n\na blurry photo of the {}.\n", encoding="utf-8")
    assert read_templates([str(listed), "itap of a {}."]) == ["a photo of a {}.", "a blurry photo of the {}.",
                                                              "itap of a {}."]
    with pytest.raises(InputError, match=r"template 'a photo' has no \{\} for the class name \(and is not a file\)"):
        read_templates(["a photo"])
    listed.write_text("a photo of a {}.\na photo of something\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"templates.txt:2: template 'a photo of something' has no \{\}"):
        read_templates([str(listed)])
    listed.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="holds no template"):
        read_templates([str(listed)])
    assert fill_template("a {} next to a {{}}", "cat") == "a cat next to a {cat}"


def write_edits(path, text):
    path.write_text(text if isinstance(text, str) else json.dumps(text), encoding="utf-8")
    return str(path)


def test_edits(tmp_path):
    edits = write_edits(tmp_path / "edits.json", {"scene": ["a photo of a {} on a plate."],
                                                  "style": ["a sketch of a {}.", "a soft photo of a {}."]})
    assert read_edits(edits) == {"scene": ["a photo of a {} on a plate."],
                                 "style": ["a sketch of a {}.", "a soft photo of a {}."]}


@pytest.mark.parametrize("content, message", [
    ({"shape": ["a photo of a triangular {}.", "a photo of a square thing"]},
     r"edit family 'shape': template 'a photo of a square thing' has no \{\}"),
    (["a photo of a {}."], "expected a JSON object of edit families"),
    ({}, "expected a JSON object of edit families"),
    ({"shape": []}, "edit family 'shape' must be a non-empty list"),
    ({"shape": "a photo of a round {}."}, "edit family 'shape' must be a non-empty list"),
    ({"shape": [3]}, "edit family 'shape': 3 is not a template string"),
    ({"shape": ["a round {}."], "size": ["a round {}."]}, "template 'a round {}.' is already in family 'shape'"),
    ('{"shape": ["a round {}."],\n "shape": ["a square {}."]}', "edit family 'shape' appears twice"),
    ('{"shape": ["a round {}."],\n oops}', r"edits.json:2: not valid JSON"),
])
def test_edit_errors(tmp_path, content, message):
    with pytest.raises(InputError, match=message):
        read_edits(write_edits(tmp_path / "edits.json", content))


def test_default_edits_cover_the_families():
    edits = read_edits(DEFAULT_EDITS)
    assert list(edits) == ["shape", "size", "style", "material", "illumination", "viewpoint", "background"]
    assert all(len(templates) == 5 for templates in edits.values())
    prompts = {fill_template(t, "cup") for templates in edits.values() for t in templates}
    assert len(prompts) == 35 and all("cup" in p and "{" not in p for p in prompts)


def test_unreadable_images_are_a_warning_or_an_error_naming_the_first(capsys):
    places, paths = ["in.jsonl:1", "in.jsonl:2", "in.jsonl:3"], ["a.jpg", "b.jpg", "c.jpg"]
    report_unreadable_images(places, paths, {}, strict=True)
    assert capsys.readouterr().err == ""
    failures = {2: "truncated", 1: "no such file"}
    report_unreadable_images(places, paths, failures, strict=False)
    assert capsys.readouterr().err == ("warning: in.jsonl:2: image b.jpg could not be read (no such file); "
                                       "2 image(s) skipped (--strict makes this an error)\n")
    with pytest.raises(InputError, match=r"^in.jsonl:2: image b.jpg could not be read \(no such file\); "
                                         r"2 image\(s\) failed in all$"):
        report_unreadable_images(places, paths, failures, strict=True)
    with pytest.raises(InputError, match="3 image"):  # none read: nothing to evaluate
        report_unreadable_images(places, paths, {**failures, 0: "empty file"}, strict=False)

