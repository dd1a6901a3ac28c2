"""The whole LGIP pipeline, offline, in about a minute: the first command to run.

It draws a small sample of images with five captions each in COCO's format, builds the
base JSONL with build_base_jsonl.py, runs the generators, evaluates two tiny models it
builds on the spot (an open_clip CLIP and a transformers SigLIP with RANDOM weights, so
the numbers only show that the pipeline works), and writes the table, the plots and one
HTML page (report.html: the leaderboard, the plots, and the images and captions behind
the numbers from the evaluations' pair dumps) with lgip_report.py. Each stage runs as
its own script, exactly as you would run it.

`--models SPEC ...` evaluates real models instead (on a machine that has their weights).
The tiny-model builders (lgip/tiny.py) are also what the tests and benchmarks use.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shlex
import subprocess
import sys
import time
from typing import List

from lgip.cli import nonnegative_int, positive_int, run_cli
from lgip.io import check_output_path
from lgip.models.spec import parse_specs
from lgip.tiny import CAPTIONS, build_tiny_openclip, build_tiny_siglip, draw_images

_DIR = os.path.dirname(os.path.abspath(__file__))
OUTPUT_DIR = os.path.join(_DIR, "lgip_quickstart_out")
N_IMAGES = 24
CAPTIONS_PER_IMAGE = 6  # COCO has 5-7 per image; the builder keeps the first five
SEED = 0
BOOTSTRAP = 200


def write_coco_captions(path: str, image_paths: List[str], captions_per_image: int, seed: int) -> None:
    """A COCO-format captions file for the drawn images (ids from 1, captions from CAPTIONS)."""
    rng = random.Random(seed)
    images, annotations = [], []
    for image_id, image_path in enumerate(image_paths, start=1):
        images.append({"id": image_id, "file_name": os.path.basename(image_path), "coco_url": "", "width": 64,
                       "height": 48})
        for caption in rng.sample(CAPTIONS, captions_per_image):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"images": images, "annotations": annotations}, handle)


def run_stage(number: int, total: int, title: str, script: str, *args: str) -> None:
    """Run one pipeline script as a user would, showing the command and its output."""
    print(f"\n[{number}/{total}] {title}\n$ {shlex.join(['python', script, *args])}", flush=True)
    result = subprocess.run([sys.executable, os.path.join(_DIR, script), *args], cwd=_DIR)
    if result.returncode != 0:
        sys.exit(f"quickstart stopped: {script} exited with code {result.returncode}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=OUTPUT_DIR, help="where everything goes (default: %(default)s)")
    parser.add_argument("--models", nargs="+", metavar="SPEC", default=None,
                        help="evaluate these model specs instead of two tiny random models built here")
    parser.add_argument("--n-images", type=positive_int, default=N_IMAGES, help="images to draw (default: %(default)s)")
    parser.add_argument("--seed", type=nonnegative_int, default=SEED, help="seed of the drawn images and captions (default: %(default)s)")
    return parser.parse_args()


def main():
    args = parse_args()
    check_output_path(args.output_dir, [], "--output-dir", folder=True)  # before a minute of work
    if args.models:
        parse_specs(args.models)
    started = time.perf_counter()
    out = os.path.abspath(args.output_dir)
    images_dir, captions_json = os.path.join(out, "train2017"), os.path.join(out, "annotations", "captions_train2017.json")
    base = os.path.join(out, "lgip_quickstart_base.jsonl")
    perturbed, fliptypes = base.replace(".jsonl", "_with_perturb.jsonl"), base.replace(".jsonl", "_with_fliptypes.jsonl")
    total = 8

    print(f"[1/{total}] drawing {args.n_images} images with {CAPTIONS_PER_IMAGE} captions each in COCO's format into {out}")
    image_paths = draw_images(images_dir, args.n_images, seed=args.seed)
    for index, path in enumerate(image_paths, start=1):  # COCO's file names
        os.replace(path, os.path.join(images_dir, f"{index:012d}.jpg"))
    image_paths = [os.path.join(images_dir, f"{index:012d}.jpg") for index in range(1, len(image_paths) + 1)]
    write_coco_captions(captions_json, image_paths, CAPTIONS_PER_IMAGE, args.seed)

    run_stage(2, total, "building the base JSONL", "build_base_jsonl.py", "--captions", captions_json,
              "--images", images_dir, "--output", base, "--n", str(args.n_images), "--check-images")
    run_stage(3, total, "generating paraphrases and flips", "diff_gen_caption.py", "--input", base)
    run_stage(4, total, "generating them with flip types", "make_perturb_with_fliptypes.py", "--input", base)

    if args.models:
        specs = args.models
        print(f"\n[5/{total}] using the models you named: {' '.join(specs)}")
    else:
        print(f"\n[5/{total}] building two tiny models with RANDOM weights (an open_clip CLIP and a SigLIP). "
              f"Their numbers mean nothing; they show the pipeline end to end, offline.")
        models_dir = os.path.join(out, "models")
        specs = [build_tiny_openclip(os.path.join(models_dir, "tiny-openclip")),
                 build_tiny_siglip(os.path.join(models_dir, "tiny-siglip"))]
        print("  " + "\n  ".join(specs))
    common = ["--models", *specs, "--output-dir", out, "--bootstrap", str(BOOTSTRAP), "--quiet"]
    pair_dumps = [os.path.join(out, "pairs_perturb.csv.gz"), os.path.join(out, "pairs_fliptypes.csv.gz")]
    run_stage(6, total, "LGIP metrics per model", "run_lgip_multi.py", "--input", perturbed, *common,
              "--dump-pairs", pair_dumps[0])
    run_stage(7, total, "LGIP metrics per flip type (the cache is warm: nothing is encoded again for "
              "texts already seen)", "run_lgip_by_fliptype.py", "--input", fliptypes, *common,
              "--dump-pairs", pair_dumps[1])
    metric_files = sorted(glob.glob(os.path.join(out, "*__LGIP_*.metrics.json")))
    metric_files = [path for path in metric_files if not path.endswith("__LGIP_ALL.metrics.json")]
    run_stage(8, total, "the report", "lgip_report.py", *metric_files, "--csv", os.path.join(out, "lgip_table.csv"),
              "--plot-frontier", os.path.join(out, "lgip_frontier.png"),
              "--plot-types", os.path.join(out, "lgip_flip_types.png"), "--html", os.path.join(out, "report.html"),
              "--pairs", *pair_dumps)

    print(f"\nDone in {time.perf_counter() - started:.0f} s. Everything is in {out}:")
    for label, path in [("base JSONL", base), ("perturbed JSONL", perturbed), ("with flip types", fliptypes),
                        ("metric files", os.path.join(out, "*.metrics.json")), ("table", os.path.join(out, "lgip_table.csv")),
                        ("frontier plot", os.path.join(out, "lgip_frontier.png")),
                        ("flip-type plot", os.path.join(out, "lgip_flip_types.png")),
                        ("pair dumps", os.path.join(out, "pairs_*.csv.gz")),
                        ("HTML report", os.path.join(out, "report.html")),
                        ("embedding cache", os.path.join(out, ".lgip_cache"))]:
        print(f"  {label:>16}: {path}")
    print(f"\nOpen the report in a browser: file://{os.path.join(out, 'report.html')}")
    print("\nThe real run (COCO captions + images, the paper's nine models; see README 'Reproduce the paper'):\n"
          "  python build_base_jsonl.py --download\n"
          "  python diff_gen_caption.py && python make_perturb_with_fliptypes.py\n"
          "  python run_lgip_multi.py && python run_lgip_by_fliptype.py\n"
          "  python lgip_report.py *.metrics.json --plot-frontier frontier.png --plot-types flip_types.png --correlate")


if __name__ == "__main__":
    run_cli(main)
