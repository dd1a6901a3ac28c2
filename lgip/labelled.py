"""Labelled images for the probes that classify (semantic certification, embedding
matching): a JSONL of `image_path` + `label` or an ImageFolder directory, the class names,
the class-prompt templates and the edit families. Standard library only; every mistake in
the input is an InputError naming the file (and line) and what is wrong.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Union

from lgip.io import InputError, iter_jsonl, resolve_image_path, where

# The image files an ImageFolder class folder may hold (torchvision's list), any case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_TEMPLATE = "a photo of a {}."
DEFAULT_EDITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probes", "default_edits.json")
SLOT = "{}"   # where a template takes the class name


class Source(NamedTuple):
    """Where one labelled image came from: the input (JSONL file or image folder), the
    JSONL line (None for a folder) and the image path as the input writes it (the
    record's string, or class/file relative to the folder)."""

    input: str
    line: Optional[int]
    image_path: str

    def __str__(self) -> str:
        if self.line is not None:
            return where(self.input, self.line)
        return os.path.join(self.input, self.image_path)


class Labelled(NamedTuple):
    """Images with their class: paths to open, label indices into `classnames`, the class
    names (the competitors of zero-shot classification), where each image came from, and
    how many records were skipped because their label is null (an image with no class,
    as build_base_jsonl.py --labels writes for a COCO image without instances)."""

    image_paths: List[str]
    labels: List[int]
    classnames: List[str]
    sources: List[Source]
    num_unlabelled: int = 0


def read_labelled(path: str, classnames_file: Optional[str] = None, min_classes: int = 1) -> Labelled:
    """Read labelled images from a JSONL file (records with `image_path` and `label`, a
    class name; other keys ignored; relative paths are relative to the file's folder; a
    record whose label is null, as build_base_jsonl.py --labels writes for an image
    without any instance, is skipped and counted) or
    an ImageFolder directory (one subfolder per class, its image files found recursively
    by extension, in sorted order; hidden folders skipped), told apart by what `path` is.

    Class names are the labels found, sorted, or those of `classnames_file` in its order
    (one per line; names no image carries are extra competitors). Raises InputError for a
    missing input, a record without a label or image path, a label that is not in the
    class names, an empty class list, a class folder without images, a JSONL without any
    labelled record, or fewer than `min_classes` classes."""
    named = read_classnames(classnames_file) if classnames_file else None
    if os.path.isdir(path):
        images = _read_image_folder(path, named, classnames_file)
    elif os.path.isfile(path):
        images = _read_labelled_jsonl(path, named, classnames_file)
    else:
        raise InputError(f"{path}: no such file or folder (expected a labelled JSONL or an image folder)")
    if not images.image_paths:
        raise InputError(f"{path}: no labelled image ({images.num_unlabelled} record(s) with a null label)")
    if len(images.classnames) < min_classes:
        origin = classnames_file or path
        raise InputError(f"{origin}: {len(images.classnames)} class(es) ({', '.join(images.classnames)}); "
                         f"zero-shot classification here needs at least {min_classes}")
    return images


def read_classnames(path: str) -> List[str]:
    """Class names, one per line (blank lines skipped, spaces at the ends dropped).
    Raises InputError for a missing or empty file and for a name given twice."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such class-name file")
    names: List[str] = []
    first_line: Dict[str, int] = {}
    for line_no, name in _text_lines(path):
        if name in first_line:
            raise InputError(f"{where(path, line_no)}: class name {name!r} given twice (first on line {first_line[name]})")
        first_line[name] = line_no
        names.append(name)
    if not names:
        raise InputError(f"{path}: the class-name file lists no class (an empty class list)")
    return names


def _text_lines(path: str) -> Iterable:
    """(line number, stripped text) for each non-blank line of a UTF-8 text file."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    yield line_no, line.strip()
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _read_labelled_jsonl(path: str, named: Optional[List[str]], classnames_file: Optional[str]) -> Labelled:
    records, unlabelled = [], 0
    for line_no, record in iter_jsonl(path):
        image_path = record.get("image_path")
        if not isinstance(image_path, str) or not image_path:
            raise InputError(f"{where(path, line_no)}: record has no 'image_path' (a non-empty string)")
        if "label" not in record:
            raise InputError(f"{where(path, line_no)}: record has no 'label' (the image's class name)")
        label = record["label"]
        if label is None:
            unlabelled += 1
            continue
        if not isinstance(label, str) or not label.strip():
            raise InputError(f"{where(path, line_no)}: 'label' must be a class name, got {label!r}")
        records.append((line_no, image_path, label))
    classnames = named if named is not None else sorted({label for _, _, label in records})
    index = {name: i for i, name in enumerate(classnames)}
    labels = []
    for line_no, _, label in records:
        if label not in index:
            raise InputError(f"{where(path, line_no)}: label {label!r} is not in the class names ({classnames_file})")
        labels.append(index[label])
    return Labelled([resolve_image_path(image_path, path) for _, image_path, _ in records], labels, classnames,
                    [Source(path, line_no, image_path) for line_no, image_path, _ in records], unlabelled)


def _read_image_folder(path: str, named: Optional[List[str]], classnames_file: Optional[str]) -> Labelled:
    folders = sorted(entry.name for entry in os.scandir(path) if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise InputError(f"{path}: no class folders (an image folder holds one subfolder per class): an empty class list")
    classnames = named if named is not None else folders
    index = {name: i for i, name in enumerate(classnames)}
    image_paths: List[str] = []
    labels: List[int] = []
    sources: List[Source] = []
    for folder in folders:
        if folder not in index:
            raise InputError(f"{os.path.join(path, folder)}: folder {folder!r} is not in the class names ({classnames_file})")
        found = _images_under(os.path.join(path, folder))
        if not found:
            raise InputError(f"{os.path.join(path, folder)}: class folder holds no image files "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        for relative in found:
            written = os.path.join(folder, relative)
            image_paths.append(os.path.join(path, written))
            labels.append(index[folder])
            sources.append(Source(path, None, written))
    return Labelled(image_paths, labels, classnames, sources)


def _images_under(folder: str) -> List[str]:
    """Image files below `folder` (recursively, hidden folders skipped), relative to it, sorted."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)


def fill_template(template: str, classname: str) -> str:
    """The prompt for one class: every {} replaced by the class name (other braces kept)."""
    return template.replace(SLOT, classname)


def read_templates(values: Union[str, Sequence[str]]) -> List[str]:
    """Class-prompt templates from `--templates`: each value is a template with {} for the
    class name, or a file with one template per line. Several templates make an ensemble
    (the caller averages their embeddings). Raises InputError for a template without {}
    (naming the file and line where it came from one) and for an empty file."""
    templates: List[str] = []
    for value in [values] if isinstance(values, str) else values:
        if os.path.isfile(value):
            lines = list(_text_lines(value))
            if not lines:
                raise InputError(f"{value}: the template file holds no template")
            for line_no, template in lines:
                if SLOT not in template:
                    raise InputError(f"{where(value, line_no)}: template {template!r} has no {{}} for the class name")
                templates.append(template)
        elif SLOT in value:
            templates.append(value)
        else:
            raise InputError(f"template {value!r} has no {{}} for the class name (and is not a file)")
    if not templates:
        raise InputError("no class-prompt template given")
    return templates


def read_edits(path: str) -> Dict[str, List[str]]:
    """Edit families from a JSON object: family name -> list of edit templates, each with
    {} for the class name ("a photo of a {} on a plate"), in the file's order. Raises
    InputError (naming the file, and the family and template where one is at fault) for a
    missing file, bad JSON, anything but an object of non-empty lists of strings, a family
    given twice, a template without {}, or a template in two places."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such edits file")

    def no_repeats(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise InputError(f"{path}: edit family {key!r} appears twice")
            seen[key] = value
        return seen

    try:
        with open(path, encoding="utf-8-sig") as handle:
            families = json.load(handle, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as err:
        raise InputError(f"{where(path, err.lineno)}: not valid JSON ({err.msg}, column {err.colno})") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not isinstance(families, dict) or not families:
        raise InputError(f"{path}: expected a JSON object of edit families (family -> list of templates with {{}})")
    owner: Dict[str, str] = {}
    for family, templates in families.items():
        if not family.strip():
            raise InputError(f"{path}: an edit family has an empty name")
        if not isinstance(templates, list) or not templates:
            raise InputError(f"{path}: edit family {family!r} must be a non-empty list of templates")
        for template in templates:
            if not isinstance(template, str):
                raise InputError(f"{path}: edit family {family!r}: {template!r} is not a template string")
            if SLOT not in template:
                raise InputError(f"{path}: edit family {family!r}: template {template!r} has no {{}} for the class name")
            if template in owner:
                raise InputError(f"{path}: edit family {family!r}: template {template!r} is already in family "
                                 f"{owner[template]!r}")
            owner[template] = family
    return families


def report_unreadable_images(places: Sequence, image_paths: Sequence[str], failures: Dict[int, str],
                             strict: bool) -> None:
    """What a labelled-image probe says about the images it could not read (`failures`:
    {index: reason}; `places[i]`: where image i came from, FILE:LINE or its folder path):
    nothing when there are none; an InputError naming the first with --strict or when no
    image was read; else one warning line on stderr (the probe goes on without them)."""
    if not failures:
        return
    first, reason = min(failures.items())
    message = f"{places[first]}: image {image_paths[first]} could not be read ({reason})"
    if strict or len(failures) == len(image_paths):
        raise InputError(message + f"; {len(failures)} image(s) failed in all")
    print(f"warning: {message}; {len(failures)} image(s) skipped (--strict makes this an error)", file=sys.stderr)
