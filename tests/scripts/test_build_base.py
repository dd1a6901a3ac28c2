"""build_base_jsonl.py, run as a user runs it, on a small COCO-format captions file and
tiny JPEGs the tests draw. Downloads come from an HTTP server on 127.0.0.1 that the
tests start; nothing else is contacted."""
from __future__ import annotations

import http.server
import io
import json
import os
import random
import threading
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import run_script

# Captions per image: ids 101..112, four images have fewer than five (4, 4, 3, 0).
CAPTION_COUNTS = {101: 6, 102: 4, 103: 5, 104: 6, 105: 5, 106: 4, 107: 5, 108: 6, 109: 3, 110: 5, 111: 0, 112: 5}
QUALIFYING = sorted(i for i, count in CAPTION_COUNTS.items() if count >= 5)
# Image 101's captions in annotation-id order (ids 10..50); the sixth, id 60, must be left
# out. One caption ends in a space, one in a newline: both must survive untouched.
IMAGE_101_FIRST_FIVE = ["a cat on a mat", "a cat sitting on a mat ", "a café cat\n", "the cat rests", "a mat with a cat"]
IMAGE_101_SIXTH = "never chosen: annotation id 60 is the highest"


def file_name(image_id: int) -> str:
    return f"{image_id:012d}.jpg"


def jpeg_bytes(image_id: int, size=(32, 24)) -> bytes:
    """A small JPEG of noise (noise so that a truncated copy loses pixel data, not header)."""
    pixels = random.Random(image_id).randbytes(size[0] * size[1] * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def coco_annotations():
    """[(annotation id, image id, caption)] with ids that do not follow file order."""
    annotations = [(60, 101, IMAGE_101_SIXTH), (30, 101, IMAGE_101_FIRST_FIVE[2]), (10, 101, IMAGE_101_FIRST_FIVE[0]),
                   (50, 101, IMAGE_101_FIRST_FIVE[4]), (20, 101, IMAGE_101_FIRST_FIVE[1]), (40, 101, IMAGE_101_FIRST_FIVE[3])]
    other_ids = random.Random(7).sample(range(1000, 9000), sum(CAPTION_COUNTS.values()))
    for image_id, count in CAPTION_COUNTS.items():
        if image_id != 101:
            annotations += [(other_ids.pop(), image_id, f"image {image_id} caption {k}") for k in range(count)]
    random.Random(3).shuffle(annotations)
    return annotations


def expected_captions(image_id: int):
    """First five captions by annotation id, worked out independently of the script."""
    if image_id == 101:
        return IMAGE_101_FIRST_FIVE
    return [caption for _, i, caption in sorted(coco_annotations()) if i == image_id][:5]


def coco_payload(base_url="http://127.0.0.1:9", reverse=False):
    images = [{"id": i, "file_name": file_name(i), "coco_url": f"{base_url}/{file_name(i)}", "height": 24, "width": 32}
              for i in CAPTION_COUNTS]
    annotations = [{"id": a, "image_id": i, "caption": c} for a, i, c in coco_annotations()]
    if reverse:
        images.reverse()
        annotations.reverse()
    return {"info": {}, "images": images, "annotations": annotations}


@pytest.fixture
def work(tmp_path):
    """Captions file, images folder with every image drawn, and an empty output folder."""
    captions = tmp_path / "annotations" / "captions_train2017.json"
    captions.parent.mkdir()
    captions.write_text(json.dumps(coco_payload()), encoding="utf-8")
    images = tmp_path / "train2017"
    images.mkdir()
    for image_id in CAPTION_COUNTS:
        (images / file_name(image_id)).write_bytes(jpeg_bytes(image_id))
    out_dir = tmp_path / "runs" / "base"
    out_dir.mkdir(parents=True)
    return {"captions": captions, "images": images, "out_dir": out_dir, "output": out_dir / "base.jsonl"}


def run(*args):
    return run_script("build_base_jsonl.py", *args)


def build(work, *extra, output=None, captions=None):
    return run("--captions", captions or work["captions"], "--images", work["images"],
               "--output", output or work["output"], *extra)


def read_records(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------
# The records
# ---------------------------------------------------------------------------


def test_records_keep_five_caption_images_and_their_first_five_captions(work):
    result = build(work, "--n", len(QUALIFYING))
    assert result.returncode == 0, result.stderr
    records = read_records(work["output"])

    assert [r["image_id"] for r in records] == QUALIFYING  # all of them, ascending image id
    for record in records:
        assert list(record) == ["image_id", "file_name", "image_path", "orig_captions"]
        assert record["file_name"] == file_name(record["image_id"])
        assert record["orig_captions"] == expected_captions(record["image_id"])
    assert records[0]["orig_captions"] == IMAGE_101_FIRST_FIVE  # trailing space and newline kept
    assert "café" in work["output"].read_text(encoding="utf-8")  # written as UTF-8, not \u00e9

    # Relative paths resolve against the output file's folder, not the working directory.
    for record in records:
        assert not os.path.isabs(record["image_path"])
        resolved = work["out_dir"] / record["image_path"]
        assert resolved.resolve() == (work["images"] / record["file_name"]).resolve()

    summary = result.stdout
    assert "images in file:      8" in summary
    assert "qualifying images:   8" in summary
    assert "skipped images:      4" in summary
    assert str(work["output"]) in summary


def test_n_sample_is_reproducible_and_follows_the_seed(work, tmp_path):
    first, again, other_seed = (work["out_dir"] / name for name in ("a.jsonl", "b.jsonl", "c.jsonl"))
    assert build(work, "--n", 3, "--seed", 0, output=first).returncode == 0
    assert build(work, "--n", 3, "--seed", 0, output=again).returncode == 0
    assert build(work, "--n", 3, "--seed", 1, output=other_seed).returncode == 0

    assert first.read_bytes() == again.read_bytes()
    ids = [r["image_id"] for r in read_records(first)]
    assert ids == sorted(random.Random(0).sample(QUALIFYING, 3))
    assert [r["image_id"] for r in read_records(other_seed)] == sorted(random.Random(1).sample(QUALIFYING, 3))
    assert [r["image_id"] for r in read_records(other_seed)] != ids

    # The order of COCO's lists does not change the sample or a byte of the output.
    shuffled = tmp_path / "reversed.json"
    shuffled.write_text(json.dumps(coco_payload(reverse=True)), encoding="utf-8")
    from_reversed = work["out_dir"] / "d.jsonl"
    assert build(work, "--n", 3, "--seed", 0, output=from_reversed, captions=shuffled).returncode == 0
    assert from_reversed.read_bytes() == first.read_bytes()


def test_absolute_paths(work):
    result = build(work, "--n", 4, "--absolute-paths")
    assert result.returncode == 0, result.stderr
    records = read_records(work["output"])
    assert len(records) == 4
    for record in records:
        assert record["image_path"] == os.path.abspath(work["images"] / record["file_name"])


def test_help_explains_every_flag():
    result = run("--help")
    assert result.returncode == 0
    for flag in ("--captions", "--images", "--output", "--n", "--seed", "--absolute-paths", "--download",
                 "--check-images", "--workers", "--retries", "--retry-delay", "--timeout"):
        assert flag in result.stdout


# ---------------------------------------------------------------------------
# Bad input: exit 2, one error line naming the file, nothing written
# ---------------------------------------------------------------------------


def without(key):
    payload = coco_payload()
    del payload[key]
    return payload


def changed(edit):
    payload = coco_payload()
    edit(payload)
    return payload


BAD_CAPTIONS = {
    "missing file": (None, "no such file"),
    "not json": ("{'images': [", "not valid JSON"),
    "not an object": ([1, 2], "expected COCO's captions format"),
    "no images": (without("images"), "'images'"),
    "annotations not a list": (changed(lambda p: p.update(annotations={})), "'annotations'"),
    "image id not an integer": (changed(lambda p: p["images"][3].update(id="104")), "images[3]"),
    "image without file_name": (changed(lambda p: p["images"][0].pop("file_name")), "file_name"),
    "caption not a string": (changed(lambda p: p["annotations"][5].update(caption=None)), "annotations[5]"),
    "unknown image id": (changed(lambda p: p["annotations"][2].update(image_id=999)), "image_id 999"),
}


@pytest.mark.parametrize("case", sorted(BAD_CAPTIONS))
def test_bad_captions_file_is_refused_without_output(work, tmp_path, case):
    content, message = BAD_CAPTIONS[case]
    captions = tmp_path / "bad_captions.json"
    if content is not None:
        captions.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    assert_refused(build(work, "--n", 2, captions=captions), captions, message, work["out_dir"])


def test_fewer_qualifying_images_than_n_says_how_many(work):
    result = build(work, "--n", len(QUALIFYING) + 1)
    assert_refused(result, work["captions"], f"only {len(QUALIFYING)} images", work["out_dir"])
    assert f"--n {len(QUALIFYING)}" in result.stderr


def test_download_without_coco_url_is_refused(work, tmp_path):
    captions = tmp_path / "no_urls.json"
    captions.write_text(json.dumps(changed(lambda p: [image.pop("coco_url") for image in p["images"]])), encoding="utf-8")
    assert_refused(build(work, "--n", 2, "--download", captions=captions), captions, "coco_url", work["out_dir"])


def test_output_onto_captions_is_refused(work):
    before = work["captions"].read_bytes()
    result = build(work, "--n", 2, output=work["captions"])
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "input file" in result.stderr
    assert work["captions"].read_bytes() == before


def assert_refused(result, named_file, message, out_dir):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(named_file) in lines[0] and message in lines[0], lines[0]
    assert list(out_dir.iterdir()) == []  # no output, no temporary file


# ---------------------------------------------------------------------------
# --check-images
# ---------------------------------------------------------------------------


def test_check_images_reports_missing_and_undecodable(work):
    assert build(work, "--n", len(QUALIFYING), "--check-images").returncode == 0

    missing, garbage, truncated = (work["images"] / file_name(i) for i in (103, 107, 110))
    missing.unlink()
    garbage.write_bytes(b"<html>not an image</html>")
    truncated.write_bytes(jpeg_bytes(110)[:-200])  # header intact: Image.verify() alone would pass it

    result = build(work, "--n", len(QUALIFYING), "--check-images")
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("image problem:")]
    assert len(problems) == 3, result.stderr
    assert any(str(missing) in line and "missing" in line for line in problems)
    assert any(str(garbage) in line and "does not decode" in line for line in problems)
    assert any(str(truncated) in line and "does not decode" in line for line in problems)
    assert len(read_records(work["output"])) == len(QUALIFYING)  # the set is written all the same


# ---------------------------------------------------------------------------
# --download against a local server
# ---------------------------------------------------------------------------


class ImageServer:
    """Serves /<file_name> from `files`; `behaviour[file_name]` can make a path fail:
    "flaky" (500 twice, then the image), "missing" (404 always), "garbage" (200 with
    bytes that are not an image), "truncated" (200 with a JPEG cut short)."""

    def __init__(self):
        self.files, self.behaviour, self.requests = {}, {}, Counter()
        lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                with lock:
                    server.requests[name] += 1
                    seen = server.requests[name]
                kind = server.behaviour.get(name)
                if name not in server.files or kind == "missing":
                    return self.send_error(404)
                if kind == "flaky" and seen <= 2:
                    return self.send_error(500)
                body = server.files[name]
                if kind == "garbage":
                    body = b"\x00\x01 this is not an image" * 20
                elif kind == "truncated":
                    body = body[: len(body) // 2]
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def server():
    image_server = ImageServer()
    image_server.files = {file_name(i): jpeg_bytes(i) for i in CAPTION_COUNTS}
    image_server.thread.start()
    yield image_server
    image_server.httpd.shutdown()
    image_server.httpd.server_close()


@pytest.fixture
def download_work(work, server, tmp_path):
    """`work` with coco_url pointing at the local server and an images folder not yet made."""
    work["captions"].write_text(json.dumps(coco_payload(base_url=server.url)), encoding="utf-8")
    work["images"] = tmp_path / "downloaded" / "train2017"
    return work


def download(work, *extra):
    return build(work, "--download", "--retries", 3, "--retry-delay", 0.01, "--timeout", 10, *extra)


def test_download_fetches_only_the_sample_and_resumes(download_work, server):
    result = download(download_work, "--n", 3)
    assert result.returncode == 0, result.stderr
    sampled = [r["file_name"] for r in read_records(download_work["output"])]
    assert sorted(os.listdir(download_work["images"])) == sorted(sampled)  # nothing else, no .part files
    for name in sampled:
        assert (download_work["images"] / name).read_bytes() == server.files[name]
    assert sorted(server.requests) == sorted(sampled) and set(server.requests.values()) == {1}
    assert "3 downloaded, 0 already present, 0 failed" in result.stdout

    again = download(download_work, "--n", 3)
    assert again.returncode == 0, again.stderr
    assert sum(server.requests.values()) == 3  # complete files are not fetched again
    assert "0 downloaded, 3 already present" in again.stdout

    # A damaged file is not complete: the next run fetches it again.
    damaged = download_work["images"] / sampled[0]
    damaged.write_bytes(server.files[sampled[0]][:-100])
    assert download(download_work, "--n", 3).returncode == 0
    assert server.requests[sampled[0]] == 2
    assert damaged.read_bytes() == server.files[sampled[0]]


def test_download_retries_and_reports_failures(download_work, server):
    flaky, missing, garbage, truncated = (file_name(i) for i in (101, 104, 105, 108))
    server.behaviour = {flaky: "flaky", missing: "missing", garbage: "garbage", truncated: "truncated"}

    result = download(download_work, "--n", len(QUALIFYING), "--check-images")
    assert result.returncode == 1

    failed = [line for line in result.stderr.splitlines() if line.startswith("download failed:")]
    assert len(failed) == 3, result.stderr
    for name, reason in ((missing, "HTTP 404"), (garbage, "not an image"), (truncated, "not an image")):
        assert any(name in line and reason in line for line in failed), result.stderr

    # A 500 is retried and the third attempt succeeds; a 404 is final; bad bytes are retried.
    assert server.requests[flaky] == 3
    assert (download_work["images"] / flaky).read_bytes() == server.files[flaky]
    assert server.requests[missing] == 1
    assert server.requests[garbage] == 4 and server.requests[truncated] == 4

    # Failed images leave no file, partial or temporary; the others are all there.
    on_disk = sorted(os.listdir(download_work["images"]))
    assert on_disk == sorted(file_name(i) for i in QUALIFYING if file_name(i) not in (missing, garbage, truncated))
    assert "5 downloaded, 0 already present, 3 failed" in result.stdout
    assert len(read_records(download_work["output"])) == len(QUALIFYING)  # the set is written all the same
