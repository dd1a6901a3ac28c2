"""Build the LGIP base set from COCO's own files: a reproducible sample of train2017
images that have at least five captions, one JSON line per image with its first five
captions exactly as COCO wrote them.

Every other stage starts from this file. `--download` fetches only the sampled images;
`--check-images` confirms that every listed image is on disk and decodes; `--labels`
adds each image's COCO object categories from `instances_train2017.json` (`label`, the
category covering the largest area, and `labels`, every category present), so the same
images serve the labelled-image probes (run_semantic_certification.py, run_embedding_matching.py).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, Dict, Iterable, Iterator, List, Tuple

from PIL import Image
from tqdm import tqdm

from lgip.cli import nonnegative_float, nonnegative_int, positive_float, positive_int, run_cli
from lgip.io import InputError, atomic_output, check_distinct_outputs, check_output_path

_DIR = os.path.dirname(os.path.abspath(__file__))

CAPTIONS_JSON = os.path.join(_DIR, "annotations", "captions_train2017.json")
INSTANCES_JSON = os.path.join(_DIR, "annotations", "instances_train2017.json")  # read with --labels
IMAGES_DIR = os.path.join(_DIR, "train2017")
OUTPUT_JSONL = os.path.join(_DIR, "lgip_coco_native5_train2017.jsonl")
N_IMAGES = 40000
SEED = 0
CAPTIONS_PER_IMAGE = 5
DOWNLOAD_WORKERS = 8
DOWNLOAD_RETRIES = 4  # retries after the first attempt
DOWNLOAD_RETRY_DELAY = 0.5  # seconds before the first retry; doubles on each further retry
DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte from the server before an attempt fails

# A client error other than these will not change on a retry (404: the image is not there).
RETRYABLE_CLIENT_ERRORS = {408, 425, 429}


# ---------------------------------------------------------------------------
# COCO captions → base records
# ---------------------------------------------------------------------------


def load_coco_captions(path: str) -> Tuple[Dict[int, Dict[str, Any]], Dict[int, List[Tuple[int, str]]]]:
    """Read COCO's captions JSON and return (images by id, [(annotation id, caption)] by
    image id). Every image appears in the second mapping, with an empty list if it has
    no captions. Raises InputError naming `path` for a missing file, text that is not
    JSON, or JSON that is not COCO's captions format."""
    coco = read_coco_json(path, ("images", "annotations"), "captions")
    images: Dict[int, Dict[str, Any]] = {}
    for index, image in enumerate(coco["images"]):
        at = f"{path}: images[{index}]"
        _require_field(image, "id", int, at)
        file_name = _require_field(image, "file_name", str, at)
        if "coco_url" in image and not isinstance(image["coco_url"], str):
            raise InputError(f"{at}: 'coco_url' must be a string, got {type(image['coco_url']).__name__}")
        # The name is joined to the images folder; it must not climb out of it.
        if not file_name or os.path.isabs(file_name) or ".." in file_name.replace("\\", "/").split("/"):
            raise InputError(f"{at}: 'file_name' {file_name!r} must be a path inside the images folder")
        if image["id"] in images:
            raise InputError(f"{at}: image id {image['id']} appears twice")
        images[image["id"]] = image

    captions_by_image: Dict[int, List[Tuple[int, str]]] = {image_id: [] for image_id in images}
    for index, annotation in enumerate(coco["annotations"]):
        at = f"{path}: annotations[{index}]"
        annotation_id = _require_field(annotation, "id", int, at)
        image_id = _require_field(annotation, "image_id", int, at)
        caption = _require_field(annotation, "caption", str, at)
        if image_id not in captions_by_image:
            raise InputError(f"{at} (id {annotation_id}): image_id {image_id} is not in 'images'")
        captions_by_image[image_id].append((annotation_id, caption))
    return images, captions_by_image


def read_coco_json(path: str, lists: Tuple[str, ...], kind: str) -> Dict[str, Any]:
    """A COCO annotation file as a dict whose `lists` keys hold lists; InputError naming
    `path` for a missing file, text that is not UTF-8 JSON, or another layout."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            coco = json.load(handle)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})") from None
    if not isinstance(coco, dict):
        raise InputError(f"{path}: expected COCO's {kind} format, a JSON object; got {type(coco).__name__}")
    for key in lists:
        if not isinstance(coco.get(key), list):
            problem = (f"has no '{key}' list" if key not in coco
                       else f"has a {type(coco[key]).__name__} for '{key}', not a list")
            raise InputError(f"{path}: not COCO's {kind} format: the top-level object {problem}")
    return coco


def _require_field(entry: Any, key: str, kind: type, at: str) -> Any:
    """Return entry[key], or raise InputError (prefixed by `at`) if `entry` is not an
    object or the value is missing or not of type `kind`."""
    if not isinstance(entry, dict):
        raise InputError(f"{at}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise InputError(f"{at}: has no '{key}'")
    value = entry[key]
    # JSON true/false load as bool, which Python counts as int; an id is never a bool.
    if not isinstance(value, kind) or isinstance(value, bool):
        wanted = "an integer" if kind is int else "a string"
        raise InputError(f"{at}: '{key}' must be {wanted}, got {type(value).__name__}")
    return value


def first_captions(captions_by_image: Dict[int, List[Tuple[int, str]]], count: int) -> Dict[int, List[str]]:
    """For each image with at least `count` captions, its first `count` captions in
    ascending annotation-id order, text untouched. Images with fewer are left out."""
    chosen = {}
    for image_id, captions in captions_by_image.items():
        if len(captions) >= count:
            # Sorting on the id alone keeps file order for equal ids, so ties stay reproducible.
            chosen[image_id] = [caption for _, caption in sorted(captions, key=lambda pair: pair[0])[:count]]
    return chosen


def load_coco_labels(path: str, image_ids: Iterable[int]) -> Dict[int, Dict[str, Any]]:
    """For each of `image_ids`, from COCO's instances JSON: `label`, the category whose
    instances cover the largest total area of the image (ties: the lower category id),
    and `labels`, every category present in category-id order. An image without any
    instance gets label None and no labels. InputError naming `path` for a missing file,
    bad JSON, or JSON that is not COCO's instances format."""
    coco = read_coco_json(path, ("categories", "annotations"), "instances")
    names: Dict[int, str] = {}
    for index, category in enumerate(coco["categories"]):
        at = f"{path}: categories[{index}]"
        names[_require_field(category, "id", int, at)] = _require_field(category, "name", str, at)
    wanted = set(image_ids)
    area: Dict[int, Dict[int, float]] = {image_id: {} for image_id in wanted}
    for index, annotation in enumerate(coco["annotations"]):
        at = f"{path}: annotations[{index}]"
        image_id = _require_field(annotation, "image_id", int, at)
        if image_id not in wanted:
            continue
        category_id = _require_field(annotation, "category_id", int, at)
        if category_id not in names:
            raise InputError(f"{at}: category_id {category_id} is not in 'categories'")
        size = annotation.get("area", 0.0)
        if not isinstance(size, (int, float)) or isinstance(size, bool):
            raise InputError(f"{at}: 'area' must be a number, got {type(size).__name__}")
        area[image_id][category_id] = area[image_id].get(category_id, 0.0) + float(size)
    labelled = {}
    for image_id, by_category in area.items():
        largest = min(by_category, key=lambda category: (-by_category[category], category)) if by_category else None
        labelled[image_id] = {"label": names[largest] if largest is not None else None,
                              "labels": [names[category] for category in sorted(by_category)]}
    return labelled


def sample_image_ids(qualifying_ids: Iterable[int], n: int, seed: int, captions_path: str) -> List[int]:
    """`n` image ids drawn by `random.Random(seed).sample` from the ids sorted ascending,
    returned sorted ascending. Sorting before sampling makes the draw independent of the
    order of COCO's file; sorting after makes the output follow image id, so two samples
    can be compared with a line diff. Raises InputError when fewer than `n` qualify."""
    sorted_ids = sorted(qualifying_ids)
    if len(sorted_ids) < n:
        raise InputError(
            f"{captions_path}: only {len(sorted_ids)} images have at least {CAPTIONS_PER_IMAGE} captions, "
            f"fewer than the {n} asked for; pass --n {len(sorted_ids)} or less"
        )
    return sorted(random.Random(seed).sample(sorted_ids, n))


def image_file(images_dir: str, image: Dict[str, Any]) -> str:
    """Where the image's file lives (or will, once downloaded)."""
    return os.path.join(images_dir, image["file_name"])


def base_record(
    image: Dict[str, Any], captions: List[str], images_dir: str, output_path: str, absolute: bool,
    labels: Dict[str, Any] | None = None,
) -> Dict[str, Any]:
    """The base JSONL record of one image. `image_path` is absolute, or relative to the
    output file's folder so the set and its images can move together; `labels` (from
    load_coco_labels) adds `label` and `labels`."""
    path = os.path.abspath(image_file(images_dir, image))
    if not absolute:
        path = os.path.relpath(path, os.path.dirname(os.path.abspath(output_path)))
    record = {"image_id": image["id"], "file_name": image["file_name"], "image_path": path, "orig_captions": captions}
    return {**record, **labels} if labels is not None else record


def write_jsonl(path: str, records: Iterable[Dict[str, Any]]) -> None:
    """Write one JSON object a line, atomically; same records give the same bytes."""
    with atomic_output(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------
# Images: decode check, parallel download
# ---------------------------------------------------------------------------


def image_problem(source: Any) -> str | None:
    """None if `source` (a path or a binary file object) is an image Pillow decodes in
    full; otherwise why not. verify() checks structure but does not read JPEG pixel
    data, so a truncated JPEG passes it; load() decodes every pixel and catches that."""
    if isinstance(source, str) and not os.path.isfile(source):
        return "missing"
    try:
        with Image.open(source) as image:
            image.verify()
        if hasattr(source, "seek"):
            source.seek(0)
        with Image.open(source) as image:
            image.load()
    except Exception as err:  # any failure to decode, whatever Pillow raises, is the answer
        return f"does not decode ({type(err).__name__}: {err})"
    return None


def fetch_image(url: str, dest: str, retries: int, retry_delay: float, timeout: float) -> Tuple[str, str]:
    """Make `dest` a complete, decodable copy of `url`. Returns ("present", "") if it
    already was, ("downloaded", "") on success, or ("failed", reason). The bytes go to
    a temporary file beside `dest` that is renamed only once they decode, so `dest`
    is never a partial file. Transient failures are retried with exponential back-off."""
    if os.path.isfile(dest) and image_problem(dest) is None:
        return "present", ""
    reason = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(retry_delay * 2 ** (attempt - 1))
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as err:
            err.close()
            reason = f"HTTP {err.code} {err.reason}"
            if 400 <= err.code < 500 and err.code not in RETRYABLE_CLIENT_ERRORS:
                return "failed", reason
            continue
        except Exception as err:  # network errors come as URLError, timeouts, resets, IncompleteRead
            reason = f"{type(err).__name__}: {err}"
            continue
        problem = image_problem(io.BytesIO(data))
        if problem:
            reason = f"server sent {len(data)} bytes that are not an image: {problem}"
            continue
        try:
            with atomic_output(dest, "wb") as handle:
                handle.write(data)
        except (OSError, InputError) as err:  # a full or read-only disk will not improve on a retry
            return "failed", f"could not write: {err}"
        return "downloaded", ""
    return "failed", reason


def in_parallel(work: Callable[..., Any], jobs: List[Tuple], workers: int, desc: str) -> Iterator[Tuple[Tuple, Any]]:
    """Yield (job, work(*job)) for every job, as each finishes, on `workers` threads,
    with a progress bar. An interrupt cancels the jobs that have not started."""
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(work, *job): job for job in jobs}
        with tqdm(total=len(jobs), desc=desc, unit="img") as bar:
            for future in as_completed(futures):
                bar.update()
                yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def download_images(
    images: List[Dict[str, Any]], images_dir: str, workers: int, retries: int, retry_delay: float, timeout: float
) -> Tuple[Dict[str, int], List[str]]:
    """Fetch each image's coco_url into `images_dir`, skipping files already complete.
    Returns (how many were present / downloaded / failed, one line per failure)."""
    os.makedirs(images_dir, exist_ok=True)
    jobs = [(image["coco_url"], image_file(images_dir, image), retries, retry_delay, timeout) for image in images]
    counts = {"present": 0, "downloaded": 0, "failed": 0}
    failures = []
    for job, (status, reason) in in_parallel(fetch_image, jobs, workers, "download"):
        counts[status] += 1
        if status == "failed":
            failures.append(f"{job[1]}: {reason} ({job[0]})")
    return counts, sorted(failures)


def check_images(paths: List[str], workers: int) -> List[str]:
    """One line (path: reason) per image that is missing or does not decode."""
    results = in_parallel(image_problem, [(path,) for path in paths], workers, "check")
    return sorted(f"{path}: {problem}" for (path,), problem in results if problem)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flag = parser.add_argument
    flag("--captions", default=CAPTIONS_JSON, help="COCO captions JSON to read (default: %(default)s)")
    flag("--images", default=IMAGES_DIR,
         help="folder that holds, or will receive, the COCO images (default: %(default)s)")
    flag("--output", default=OUTPUT_JSONL, help="base JSONL to write (default: %(default)s)")
    flag("--n", type=positive_int, default=N_IMAGES, help="how many images to sample (default: %(default)s)")
    flag("--seed", type=nonnegative_int, default=SEED,
         help="seed of the sample; same inputs and seed, same file (default: %(default)s)")
    flag("--labels", nargs="?", const=INSTANCES_JSON, default=None, metavar="INSTANCES_JSON",
         help="add 'label' (the category covering the largest area) and 'labels' (every category present) from "
              f"COCO's instances JSON (default when given without a path: {INSTANCES_JSON})")
    flag("--absolute-paths", action="store_true",
         help="write absolute image_path values instead of paths relative to the output file's folder")
    flag("--download", action="store_true",
         help="fetch the sampled images, and only those, from their coco_url into --images; complete files are kept")
    flag("--check-images", action="store_true",
         help="after writing, check that every listed image exists and decodes; exit code 1 if any does not")
    flag("--workers", type=positive_int, default=DOWNLOAD_WORKERS,
         help="parallel downloads and checks (default: %(default)s)")
    flag("--retries", type=nonnegative_int, default=DOWNLOAD_RETRIES,
         help="retries of a failed download after the first attempt (default: %(default)s)")
    flag("--retry-delay", type=nonnegative_float, default=DOWNLOAD_RETRY_DELAY,
         help="seconds before the first retry, doubling after each (default: %(default)s)")
    flag("--timeout", type=positive_float, default=DOWNLOAD_TIMEOUT,
         help="seconds a download may wait for the server before the attempt fails (default: %(default)s)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    # Every output is checked before COCO's files are read: a bad place fails in a second.
    inputs = [args.captions] + ([args.labels] if args.labels else [])
    check_output_path(args.output, inputs, "--output")
    if args.download:
        check_output_path(args.images, inputs + [args.output], "--images", folder=True)
    check_distinct_outputs([("--output", args.output), ("--images", args.images if args.download else None)])

    images, captions_by_image = load_coco_captions(args.captions)
    captions = first_captions(captions_by_image, CAPTIONS_PER_IMAGE)
    sampled = [images[image_id] for image_id in sample_image_ids(captions.keys(), args.n, args.seed, args.captions)]
    if args.download:
        # Checked before writing, so bad input leaves no output behind.
        for image in sampled:
            if not image.get("coco_url"):
                raise InputError(f"{args.captions}: image {image['id']} has no 'coco_url' to download from")

    labels = load_coco_labels(args.labels, [image["id"] for image in sampled]) if args.labels else {}
    write_jsonl(
        args.output,
        (base_record(image, captions[image["id"]], args.images, args.output, args.absolute_paths, labels.get(image["id"]))
         for image in sampled),
    )

    failures: List[str] = []
    summary = [
        f"images in file:      {len(sampled)}",
        f"qualifying images:   {len(captions)} (at least {CAPTIONS_PER_IMAGE} captions)",
        f"skipped images:      {len(images) - len(captions)} (fewer than {CAPTIONS_PER_IMAGE} captions)",
        f"output:              {args.output}",
    ]
    if args.labels:
        unlabelled = sum(entry["label"] is None for entry in labels.values())
        summary.append(f"labels:              {len(labels) - unlabelled} images labelled, {unlabelled} without any "
                       f"instance (label null) from {args.labels}")
    if args.download:
        counts, failed = download_images(
            sampled, args.images, args.workers, args.retries, args.retry_delay, args.timeout
        )
        summary.append(
            f"download:            {counts['downloaded']} downloaded, {counts['present']} already present, "
            f"{counts['failed']} failed"
        )
        failures += [f"download failed: {line}" for line in failed]
    if args.check_images:
        problems = check_images([image_file(args.images, image) for image in sampled], args.workers)
        summary.append(
            f"image check:         {len(sampled) - len(problems)} decode, {len(problems)} missing or undecodable"
        )
        failures += [f"image problem: {line}" for line in problems]

    for line in failures:
        print(line, file=sys.stderr)
    print("\n".join(summary))
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
