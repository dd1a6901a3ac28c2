"""How long `lgip_report.py --html` takes, and how big the page is, for a run the size of
the paper's: nine models, 40,000 images, about 10 million pair rows in the dumps.

It writes, into a temporary folder: a gzip CSV pair dump with PairDump's columns (per
model and image five captions, each with three paraphrases `same` and three typed flips
`type:color|number|object`: 30 rows per image and model; captions from bench_eval's word
bank, each flip one word changed; scores as float32 like the engine's, each flip's gap a
shared per-pair part plus per-model noise, so some flips beat their caption for every
model and some for none); nine metric files in run_lgip_by_fliptype.py's format; and
COCO-sized JPEGs (IMAGE_FILES drawn ones, every image path a symbolic link to one of
them, so thumbnails cost what real photos cost). Then it runs, as a user would,

    python lgip_report.py METRICS/ --html page.html --pairs pairs.csv.gz

and prints the wall time, the peak resident memory of that process and the page's size
against the targets (under a minute, under 20 MB), with the CPU seconds it used and those
other processes used meanwhile (a shared machine stretches the wall time). `--rows`
scales the dump down: the page is then also made without `--pairs`, and the time is
extrapolated as that fixed part plus the rest scaled to 10 million rows; a dump under
32 MB is read in one process, not on workers, so such an extrapolation overstates.
Generating the full dump takes a few minutes on its own.

    python bench/bench_html_report.py                  # 10 million rows
    python bench/bench_html_report.py --rows 1000000   # a tenth, extrapolated
    python bench/bench_html_report.py --workdir DIR    # keep the data; a second run reuses it

Nothing is written into the repository.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for folder in (REPO, os.path.join(REPO, "bench")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

from bench_eval import (COLORS, IMAGE_SIZES, NOISE_AMPLITUDE, NUMBERS, OBJECTS, draw_image,  # noqa: E402
                        machine_busy_seconds, make_caption, repository_version)
from lgip.cli import positive_int  # noqa: E402
from lgip.engine.dump import PairDump  # noqa: E402

ROWS = 10_000_000
FULL_ROWS = 10_000_000  # the paper's run, for the extrapolation
MODELS = ["openai_ViT-B-32", "openai_ViT-L-14", "laion2b_ViT-B-32", "laion2b_ViT-H-14", "eva02_ViT-B-16",
          "eva02_ViT-L-14", "siglip_base_224", "siglip_so400m_384", "siglip2_base_256"]
CAPTIONS_PER_IMAGE = 5
PARAPHRASES_PER_CAPTION = 3
FLIP_TYPES = {"color": COLORS, "number": NUMBERS, "object": OBJECTS}
IMAGE_FILES = 200  # drawn JPEGs; every image path links to one of them
EXAMPLES = 12
GZIP_LEVEL = 1  # the engine writes level 9; reading costs the same, writing here is 5x faster
SEED = 0
DATA_FORMAT = 1  # bump when what is generated changes, so a --workdir is filled again
TARGET_SECONDS = 60.0
TARGET_MB = 20.0
HWM_POLL_SECONDS = 0.2


def variants_of(caption: str, rng: random.Random):
    """[(kind, text)]: the paraphrases (a word or two added) and one flip per type (a word
    replaced by one of the type's words)."""
    words = caption.split()
    out = [("same", f"{caption.rstrip(' .')} {rng.choice(['here', 'in the picture', 'in this photo'])}.")
           for _ in range(PARAPHRASES_PER_CAPTION)]
    for flip_type, bank in FLIP_TYPES.items():
        changed = list(words)
        changed[rng.randrange(len(changed))] = str(rng.choice(bank))
        out.append((f"type:{flip_type}", " ".join(changed)))
    return out


def write_images(folder: str, count: int, seed: int) -> list:
    """`count` image paths (symbolic links to IMAGE_FILES drawn COCO-sized JPEGs)."""
    drawn_folder, link_folder = os.path.join(folder, "drawn"), os.path.join(folder, "images")
    os.makedirs(drawn_folder)
    os.makedirs(link_folder)
    rng = random.Random(seed)
    side = max(max(size) for size in IMAGE_SIZES) + 128
    noise = np.random.default_rng(seed).normal(0, NOISE_AMPLITUDE / 2, size=(side, side, 3)).astype(np.int16)
    drawn = []
    for index in range(min(IMAGE_FILES, count)):
        drawn.append(os.path.join(drawn_folder, f"{index:04d}.jpg"))
        draw_image(drawn[-1], rng, noise)
    paths = []
    for index in range(count):
        paths.append(os.path.join(link_folder, f"{index + 1:012d}.jpg"))
        os.symlink(drawn[index % len(drawn)], paths[-1])
    return paths


def write_dump(path: str, image_paths: list, seed: int) -> int:
    """The dump: per model every image's captions and their variants; returns the rows."""
    rng = random.Random(seed)
    lines, image_ids, images, caption_indices, captions, kinds, texts = [], [], [], [], [], [], []
    for line, image_path in enumerate(image_paths, start=1):
        for caption_index in range(CAPTIONS_PER_IMAGE):
            caption = make_caption(rng).strip()
            for kind, text in variants_of(caption, rng):
                lines.append(line)
                image_ids.append(line)
                images.append(image_path)
                caption_indices.append(caption_index)
                captions.append(caption)
                kinds.append(kind)
                texts.append(text)
    pairs = len(lines)
    is_flip = np.array([kind.startswith("type:") for kind in kinds])
    numbers = np.random.default_rng(seed)
    shared = np.where(is_flip, numbers.normal(0.02, 0.03, pairs), 0.0)  # how hard the pair is for every model
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as binary:
        import io

        with io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
            writer = csv.writer(text)
            writer.writerow(PairDump.COLUMNS)
            for model in MODELS:
                base = (0.25 + 0.03 * numbers.standard_normal(pairs)).astype(np.float32)
                gap = shared + np.where(is_flip, 0.02, 0.015) * numbers.standard_normal(pairs)
                variant = (base - gap).astype(np.float32)
                writer.writerows(zip([model] * pairs, lines, image_ids, images, caption_indices, captions, kinds, texts,
                                     base.tolist(), variant.tolist(), (base - variant).tolist()))
    return pairs * len(MODELS)


def write_metric_files(folder: str, images: int) -> None:
    """One run_lgip_by_fliptype.py-shaped metric file per model (numbers made up)."""
    os.makedirs(folder)
    numbers = np.random.default_rng(SEED)
    for model in MODELS:
        error, gap = float(numbers.uniform(0.02, 0.08)), float(numbers.uniform(0.0, 0.05))
        by_type = {t: {"pos_rate": float(numbers.uniform(0.5, 0.95))} for t in FLIP_TYPES}
        entry = {"model_tag": model, "num_samples": images, "invariance_error_mean": error,
                 "global_sensitivity": {"gap_mean": gap, "pos_rate": float(numbers.uniform(0.6, 0.9))},
                 "by_flip_type": by_type,
                 "ci95": {"invariance_error_mean": [error * 0.97, error * 1.03],
                          "global_sensitivity.gap_mean": [gap - 0.002, gap + 0.002]},
                 "config": {"script": "run_lgip_by_fliptype.py", "spec": f"bench:{model}", "input": "bench.jsonl",
                            "input_sha256": "0" * 64, "precision": "fp16", "device": "cuda", "bootstrap_resamples": 1000,
                            "seed": 0, "versions": {"python": sys.version.split()[0]},
                            "timings_seconds": {"images": 100.0, "texts": 20.0}}}
        with open(os.path.join(folder, f"bench__LGIP_{model}.metrics.json"), "w", encoding="utf-8") as handle:
            json.dump(entry, handle)


def high_water_marks(pid: int, marks: dict, done: threading.Event) -> None:
    """Poll VmHWM (peak resident memory since exec) of `pid` and of its child processes
    into `marks` until `done`. Not getrusage: its ru_maxrss would count this process's
    own size, which the child has for a moment between fork and exec."""
    while not done.is_set():
        try:
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
                pids = [pid] + [int(child) for child in handle.read().split()]
        except OSError:
            pids = [pid]
        for each in pids:
            try:
                with open(f"/proc/{each}/status", encoding="ascii") as handle:
                    for line in handle:
                        if line.startswith("VmHWM:"):
                            marks[each] = max(marks.get(each, 0), int(line.split()[1]) / 1024)
            except OSError:
                pass
        done.wait(HWM_POLL_SECONDS)


def time_report(command: list) -> tuple:
    """Run lgip_report.py: (wall seconds, CPU seconds of it and its workers, CPU seconds
    other processes used meanwhile, {"report" or worker pid: peak RSS in MB})."""
    busy_before, started = machine_busy_seconds(), time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        report = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        marks, done = {}, threading.Event()
        watcher = threading.Thread(target=high_water_marks, args=(report.pid, marks, done), daemon=True)
        watcher.start()
        _pid, status, usage = os.wait4(report.pid, 0)  # CPU: that process and the workers it waited for
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            sys.exit(f"lgip_report.py failed:\n{errors.read().decode(errors='replace')}")
    cpu = usage.ru_utime + usage.ru_stime
    marks["report"] = marks.pop(report.pid, float("nan"))
    return seconds, cpu, machine_busy_seconds() - busy_before - cpu, marks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=positive_int, default=ROWS, help="pair rows in the dump, all models (default: %(default)s)")
    parser.add_argument("--examples", type=positive_int, default=EXAMPLES, help="--examples K (default: %(default)s)")
    parser.add_argument("--workdir", default=None, help="keep everything here instead of a temporary folder")
    args = parser.parse_args()
    per_image = len(MODELS) * CAPTIONS_PER_IMAGE * (PARAPHRASES_PER_CAPTION + len(FLIP_TYPES))
    images = max(1, round(args.rows / per_image))
    folder = args.workdir or tempfile.mkdtemp(prefix="bench_html_report_")
    os.makedirs(folder, exist_ok=True)
    print(f"commit {repository_version()}; {os.cpu_count()} CPUs; folder {folder}")
    try:
        dump, marker = os.path.join(folder, "pairs.csv.gz"), os.path.join(folder, "generated.json")
        recipe = {"format": DATA_FORMAT, "images": images, "seed": SEED}
        if os.path.exists(marker) and json.load(open(marker, encoding="utf-8")).get("recipe") == recipe:
            rows = json.load(open(marker, encoding="utf-8"))["rows"]
            print(f"reusing {rows:,} pair rows ({len(MODELS)} models, {images:,} images) in {folder}")
        else:
            for name in ("data", "metrics"):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
            started = time.perf_counter()
            image_paths = write_images(os.path.join(folder, "data"), images, SEED)
            rows = write_dump(dump, image_paths, SEED)
            write_metric_files(os.path.join(folder, "metrics"), images)
            with open(marker, "w", encoding="utf-8") as handle:
                json.dump({"recipe": recipe, "rows": rows}, handle)
            print(f"generated {rows:,} pair rows ({len(MODELS)} models, {images:,} images) in "
                  f"{time.perf_counter() - started:.0f} s")
        print(f"dump {os.path.getsize(dump) / 1e6:,.0f} MB gzip")

        page = os.path.join(folder, "page.html")
        command = [sys.executable, os.path.join(REPO, "lgip_report.py"), os.path.join(folder, "metrics"), "--html", page]
        seconds, cpu, others, marks = time_report(command + ["--pairs", dump, "--examples", str(args.examples)])
        size_mb = os.path.getsize(page) / 1e6
        worker_mb = max([mb for name, mb in marks.items() if name != "report"] or [0])
        print(f"lgip_report.py --html: {seconds:.1f} s wall, {cpu:.1f} s CPU (the report and its parsing workers), "
              f"peak RSS {marks.get('report', float('nan')):,.0f} MB (workers: {worker_mb:,.0f} MB each at most), "
              f"page {size_mb:.1f} MB")
        print(f"meanwhile other processes used {others:.0f} CPU-seconds of the {os.cpu_count()} CPUs' "
              f"{seconds * os.cpu_count():.0f} (load average now {os.getloadavg()[0]:.1f})")
        full_seconds, full_cpu = seconds, cpu
        if rows < 0.99 * FULL_ROWS:  # the same page without examples: what does not grow with the rows
            fixed_seconds, fixed_cpu, _others, _marks = time_report(command)
            scale = FULL_ROWS / rows
            full_seconds = fixed_seconds + (seconds - fixed_seconds) * scale
            full_cpu = fixed_cpu + (cpu - fixed_cpu) * scale
            print(f"without --pairs: {fixed_seconds:.1f} s wall, {fixed_cpu:.1f} s CPU; extrapolated to {FULL_ROWS:,} "
                  f"rows (that part fixed, the rest linear in rows): {full_seconds:.0f} s wall, {full_cpu:.0f} s CPU")
        print(f"targets: under {TARGET_SECONDS:.0f} s -> {'met' if full_seconds < TARGET_SECONDS else 'MISSED'} "
              f"({full_seconds:.0f} s wall, {full_cpu:.0f} s CPU at {max(rows, FULL_ROWS):,} rows); under "
              f"{TARGET_MB:.0f} MB -> {'met' if size_mb < TARGET_MB else 'MISSED'} ({size_mb:.1f} MB)")
    finally:
        if not args.workdir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
