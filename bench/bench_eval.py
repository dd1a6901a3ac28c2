"""Evaluation speed and memory, measured side by side on one machine, in one run.

What it measures (every stage on the same synthetic data and the same model weights):

  1. baseline     the paper release's algorithm, written here for comparison: one image
                  at a time (PIL open, preprocess, encode_image on a batch of one), the
                  record's five captions in one encode_text call, then per caption its
                  paraphrases in one call and its flips in one call, every text padded to
                  the full context, cosines as Python floats (model loading included,
                  as in the engine stages).
  2. multi        run_lgip_multi.py's code path in-process (the engine's evaluate_models
                  with the script's own variant groups and metrics) on the
                  `*_with_perturb.jsonl` file, with an empty embedding cache, including
                  plan reading, model loading, the bootstrap and the run facts; texts are
                  encoded with shared prefixes computed once (the default).
  3. fliptype     run_lgip_by_fliptype.py's code path right after, on the
                  `*_with_fliptypes.jsonl` file made from the same base (same images and
                  captions; its random draws differ, so some paraphrases and flips are new
                  texts), with the cache that stage 2 filled: only the new texts are
                  tokenised and encoded.
  4. multi_plain  stage 2 with prefix sharing off (--no-prefix-sharing: every text
                  encoded on its own at its own length), with an empty cache of its own.
  5. lower        the encoding work of stage 4 only: each unique image and each unique
                  text of the stage-2 file encoded once, in the engine's batches of one
                  width, without the cache (encode_images, tokenize_all, encode_text_units).
  6. lower_prefix the same with prefix sharing: each distinct prefix position once, the
                  new lower bound of stage 2.

Then, unless --process-n 0, whole processes as a user times them, each a fresh Python
process on `--process-n` records (400 by default, data of their own): the release's loop
(stage 1's function, as `bench_eval.py --release-loop`), run_lgip_multi.py with an empty
cache, and run_lgip_multi.py again (the warm rerun: every embedding cached, so no model
is built and neither torch nor open_clip is imported), each with its wall seconds, CPU
seconds and peak resident memory (wait4's ru_maxrss).

For each stage it prints wall seconds, images/s and texts/s (unique images and unique
texts of the stage's input file per wall second), how many image and text rows were
actually encoded, the peak resident memory of this process during the stage (the kernel's
high-water mark is reset at each stage start through /proc/self/clear_refs where Linux
allows it, then read with getrusage ru_maxrss), the running process peak, VmRSS before and
after, CPU seconds of this process and of everything else on the machine (a shared machine
makes timings noisy; the table says so); the stage-2 file's token positions against its
distinct prefix positions; the engine's own timings (tokenising among them); then the
ratios, the largest absolute difference between the metrics of 1 and 2 (and of 2 and 4),
and the targets. All stages run in this process by default; `--isolate` runs each in a
fresh Python process (the cache carries over on disk), so a stage's memory is what a
script run on its own would use, not what earlier stages left behind in the heap.

Data: `--n` records with five captions each, built from a word bank so that the colour,
number and object flips fire, and one JPEG per record (COCO-like sizes, random shapes over
a noise texture, fixed by `--seed`), perturbed with the real generators' rules
(diff_gen_caption.perturb_captions, make_perturb_with_fliptypes.perturb_captions through
lgip.perturb.generate_file, seed 42 as the scripts). Model: a small random open_clip CLIP
built here and saved as a `local-dir:` folder, loaded through `openclip:local-dir:DIR`;
`--model SPEC` uses any other spec instead.

On a GPU machine `--device cuda` runs every stage and process there as is (pinned memory,
non-blocking copies; add `--precision amp` for autocast); the figures in the README are
from the CPU until one has been run.

Run it from anywhere (it finds the repository from its own path):

    python bench/bench_eval.py                       # 300 records, all stages, 400-record processes
    python bench/bench_eval.py --n 20000 --skip-baseline --stages multi,fliptype --process-n 0 --isolate
    python bench/bench_eval.py --device cuda --precision amp --json figures.json
    python bench/bench_eval.py --stages multi,lower_prefix --json figures.json

Nothing is written into the repository: data, model and cache go to a temporary folder
(removed at the end) or to `--workdir` (kept; its data is reused when --n and --seed match).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import resource
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402  (after the path is set)

import diff_gen_caption  # noqa: E402
import lgip.perturb  # noqa: E402
from lgip.cli import default_workers, nonnegative_int, positive_int, run_cli  # noqa: E402
from lgip.engine import EvalSettings, build_plan, evaluate_models  # noqa: E402
from lgip.engine.cache import ShardStore, library_versions  # noqa: E402
from lgip.engine.embed import encode_images, encode_text_units, tokenize_all  # noqa: E402
from lgip.io import InputError, atomic_output, file_sha256, write_json  # noqa: E402
from lgip.models import load_model, parse_spec  # noqa: E402
from lgip.tiny import build_tiny_openclip  # noqa: E402
import make_perturb_with_fliptypes  # noqa: E402
import run_lgip_by_fliptype  # noqa: E402
import run_lgip_multi  # noqa: E402

# --- data ---------------------------------------------------------------------------
N_RECORDS = 300
SEED = 0  # draws the captions and the images
GENERATOR_SEED = 42  # the perturbation generators' seed (the release's)
CAPTIONS_PER_IMAGE = 5
IMAGE_SIZES = [(640, 480), (480, 640), (640, 427), (500, 375), (427, 640), (612, 612)]  # COCO-like
JPEG_QUALITY = 90
NOISE_AMPLITUDE = 24  # grain over the shapes, so the JPEGs weigh about what COCO's do
DATA_FORMAT = 1  # bump when the captions or images drawn here change, so --workdir data is remade

# --- model (the bench's own tiny open_clip CLIP) -------------------------------------
EMBED_DIM = 128
IMAGE_SIZE = 64
PATCH_SIZE = 8
WIDTH = 192  # both towers (vision heads: width / 64)
LAYERS = 4  # both towers
TEXT_HEADS = 4
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
DEVICE = "cpu"

# --- engine settings: the evaluation scripts' own constants -------------------------
BATCH_SIZE = run_lgip_multi.BATCH_SIZE
TEXT_BATCH_SIZE = run_lgip_multi.TEXT_BATCH_SIZE
WORKERS = default_workers()
BOOTSTRAP = 1000
CACHE_SHARD_ROWS = 4096

# --- stages and targets ---------------------------------------------------------------
STAGES = ["baseline", "multi", "fliptype", "multi_plain", "lower", "lower_prefix"]
PROCESSES = ["release", "cold", "warm"]  # whole processes, each a fresh Python
PROCESS_N = 400  # records of the whole-process runs (their own data)
PRECISION = "fp32"
METRIC_KEYS = ["invariance_error_mean", "sensitivity_gap_mean", "sensitivity_pos_rate"]
METRIC_TOLERANCE = 1e-5
TARGET_BASELINE_OVER_MULTI = 8.0  # 2 at least 8x faster than 1
TARGET_MULTI_OVER_LOWER = 1.3  # 2 at most 1.3x the time of its lower bound, 6
TARGET_BASELINE_OVER_FLIPTYPE = 30.0  # 3 at least 30x faster than 1
TARGET_TOKENISE_SHARE = 0.10  # 3 spends under this share of its time tokenising (for --n 20000)
TARGET_PROCESS_COLD = 6.0  # run_lgip_multi.py with an empty cache at least 6x faster than the release's process
TARGET_PROCESS_WARM = 25.0  # ... and the warm rerun at least 25x
TARGET_PEAK_MB = 2048  # peak resident memory, for the --n 20000 run
BUSY_SHARE = 0.10  # other processes using more than this share of the CPUs during a stage: a warning

# --- the word bank the captions are built from ----------------------------------------
COLORS = lgip.perturb.COLORS
NUMBERS = lgip.perturb.NUMBER_WORDS
OBJECTS = lgip.perturb.OBJECTS
PLURAL = {"bus": "buses", "person": "people"}
ADJECTIVES = ["small", "large", "old", "young", "tall", "little", "big", "wet"]
PEOPLE = ["man", "woman", "boy", "girl", "child", "group of people"]
ACTIONS = ["sitting on", "standing next to", "parked near", "running across", "waiting by", "lying in",
           "next to", "in front of", "walking past", "looking at", "near", "riding along"]
PLACES = ["the street", "a grassy field", "the beach", "the train station", "a wooden bench", "the river bank",
          "a parking lot", "the city square", "a dirt road", "the snow", "a kitchen table", "the shore"]
ENDINGS = [".", ".", "", " .", ".\n", " "]


# ---------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------

def noun(obj: str, count: int) -> str:
    return obj if count == 1 else PLURAL.get(obj, obj + "s")


def noun_phrase(rng: random.Random) -> str:
    """A phrase that usually holds a colour, a number word or one of the flip objects."""
    obj = rng.choice(OBJECTS)
    shape = rng.randrange(6)
    if shape == 0:
        return f"a {rng.choice(COLORS)} {obj}"
    if shape == 1:
        count = rng.randrange(1, 6)
        return f"{NUMBERS[count - 1]} {rng.choice(COLORS)} {noun(obj, count)}"
    if shape == 2:
        count = rng.randrange(1, 6)
        return f"{NUMBERS[count - 1]} {noun(obj, count)}"
    if shape == 3:
        return f"a {rng.choice(ADJECTIVES)} {obj}"
    if shape == 4:
        return f"a {rng.choice(PEOPLE)}"
    return f"the {rng.choice(COLORS)} {obj}"


def make_caption(rng: random.Random) -> str:
    """One COCO-like caption: subject, action, object or place, a few endings and cases."""
    subject = noun_phrase(rng)
    target = noun_phrase(rng) if rng.random() < 0.5 else rng.choice(PLACES)
    text = f"{subject} {rng.choice(ACTIONS)} {target}"
    if rng.random() < 0.3:
        text += f" with {noun_phrase(rng)}"
    if rng.random() < 0.2:
        text += f" on {rng.choice(PLACES)}"
    if rng.random() < 0.7:
        text = text[0].upper() + text[1:]
    return text + rng.choice(ENDINGS)


def draw_image(path: str, rng: random.Random, noise) -> None:
    """A COCO-sized JPEG: random shapes on a plain background, with grain cut from a
    fixed noise tile at a random offset (numpy is fast; all of it seeded by `rng`)."""
    import numpy as np
    from PIL import Image, ImageDraw

    width, height = rng.choice(IMAGE_SIZES)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 9)):
        x0, y0 = rng.randrange(width - 40), rng.randrange(height - 40)
        box = [x0, y0, rng.randrange(x0 + 30, width + 1), rng.randrange(y0 + 30, height + 1)]
        colour = tuple(rng.randrange(256) for _ in range(3))
        shape = rng.randrange(3)
        if shape == 0:
            draw.rectangle(box, fill=colour)
        elif shape == 1:
            draw.ellipse(box, fill=colour)
        else:
            draw.line(box, fill=colour, width=rng.randint(2, 12))
    top, left = rng.randrange(noise.shape[0] - height), rng.randrange(noise.shape[1] - width)
    pixels = np.asarray(image, dtype=np.int16) + noise[top:top + height, left:left + width]
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, format="JPEG", quality=JPEG_QUALITY)


def write_base(folder: str, n: int, seed: int) -> str:
    """Draw `n` images and write the base JSONL (image_path relative to it)."""
    import numpy as np

    image_folder = os.path.join(folder, "images")
    os.makedirs(image_folder, exist_ok=True)
    rng = random.Random(seed)
    side = max(max(size) for size in IMAGE_SIZES) + 128
    noise = np.random.default_rng(seed).normal(0, NOISE_AMPLITUDE / 2, size=(side, side, 3)).astype(np.int16)
    base_path = os.path.join(folder, "bench_base.jsonl")
    with atomic_output(base_path) as out:
        for i in range(n):
            name = f"img_{i:06d}.jpg"
            draw_image(os.path.join(image_folder, name), rng, noise)
            record = {"image_id": i, "file_name": name, "image_path": f"images/{name}",
                      "orig_captions": [make_caption(rng) for _ in range(CAPTIONS_PER_IMAGE)]}
            out.write(json.dumps(record) + "\n")
    return base_path


def perturb(base_path: str) -> tuple:
    """The two evaluation inputs, made from the same base with the generators' own rules
    and seed: `*_with_perturb.jsonl` and `*_with_fliptypes.jsonl`."""
    outputs = []
    for module, pattern in [(diff_gen_caption, diff_gen_caption.OUTPUT_PATTERN),
                            (make_perturb_with_fliptypes, make_perturb_with_fliptypes.OUTPUT_PATTERN)]:
        rng = random.Random(GENERATOR_SEED)
        output = lgip.perturb.default_output_path(base_path, pattern)
        lgip.perturb.generate_file(base_path, output, lambda captions, counts, m=module, r=rng:
                                   m.perturb_captions(captions, r, counts))
        outputs.append(output)
    return tuple(outputs)


def prepare_data(folder: str, n: int, seed: int) -> dict:
    """Base set, images and both perturbed files; reused when a previous run in the same
    folder made them with the same --n and --seed and the same generator code."""
    manifest_path = os.path.join(folder, "manifest.json")
    rules_folder = os.path.dirname(lgip.perturb.__file__)
    code = sorted(os.path.join(rules_folder, name) for name in os.listdir(rules_folder) if name.endswith(".py"))
    code += [diff_gen_caption.__file__, make_perturb_with_fliptypes.__file__]
    rules = [file_sha256(path) for path in code]
    wanted = {"n": n, "seed": seed, "generator_seed": GENERATOR_SEED, "sizes": IMAGE_SIZES, "format": DATA_FORMAT,
              "generator_sha256": rules}
    base_path = os.path.join(folder, "bench_base.jsonl")
    files = {"base": base_path,
             "perturb": lgip.perturb.default_output_path(base_path, diff_gen_caption.OUTPUT_PATTERN),
             "fliptypes": lgip.perturb.default_output_path(base_path, make_perturb_with_fliptypes.OUTPUT_PATTERN)}
    started = time.perf_counter()
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            reused = json.load(handle) == json.loads(json.dumps(wanted)) and all(map(os.path.exists, files.values()))
    except (OSError, ValueError):
        reused = False
    if not reused:
        os.makedirs(folder, exist_ok=True)
        write_base(folder, n, seed)
        perturb(base_path)
        write_json(manifest_path, wanted)
    image_bytes = sum(os.path.getsize(os.path.join(folder, "images", f"img_{i:06d}.jpg")) for i in range(n))
    return {**files, "reused": reused, "seconds": time.perf_counter() - started, "image_mb": image_bytes / 2**20}


# ---------------------------------------------------------------------------------------
# The bench's tiny model
# ---------------------------------------------------------------------------------------

def build_model(folder: str, embed_dim: int, width: int, layers: int) -> str:
    """A random open_clip CLIP saved as a `local-dir:` folder (config + fp32 safetensors);
    returns its spec. Loading it back and encoding once also warms torch up."""
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "width": width, "layers": layers},
        "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": VOCAB_SIZE, "width": width,
                     "heads": TEXT_HEADS, "layers": layers},
    }
    return build_tiny_openclip(folder, model_cfg, half_weights=False)


# ---------------------------------------------------------------------------------------
# Memory figures
# ---------------------------------------------------------------------------------------

def repository_version() -> str:
    """The repository's commit (with `+changes` when files differ from it), or `unknown`."""
    import subprocess

    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if changed else "")


def vm_rss_mb() -> float:
    """Current resident memory (VmRSS) of this process, MB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def maxrss_mb(who=resource.RUSAGE_SELF) -> float:
    """getrusage ru_maxrss in MB (Linux reports kB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def reset_peak() -> bool:
    """Reset the kernel's resident high-water mark (what ru_maxrss reads) to the current
    RSS, so the next reading is this stage's peak. False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# The stages
# ---------------------------------------------------------------------------------------

def baseline_release(spec: str, jsonl_path: str, device: str) -> dict:
    """The release's loop: one image, then 1 + 2 x 5 text calls per record, full padding,
    cosines into Python lists, pooled means at the end."""
    import torch
    from PIL import Image

    loaded = load_model(spec, device)
    if loaded.backend != "openclip":
        raise InputError(f"{spec}: the baseline is written for open_clip models")
    model, tokenizer, preprocess = loaded.model, loaded.tokenizer, loaded.preprocess
    folder = os.path.dirname(os.path.abspath(jsonl_path))
    invariance, gaps = [], []
    images = texts = 0

    def encode_texts(batch):
        return torch.nn.functional.normalize(model.encode_text(tokenizer(batch).to(device)).float(), dim=-1)

    with torch.no_grad(), open(jsonl_path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            image = Image.open(os.path.join(folder, record["image_path"])).convert("RGB")
            pixels = preprocess(image).unsqueeze(0).to(device)
            image_embedding = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)
            captions = record["orig_captions"]
            base = (image_embedding @ encode_texts(captions).T)[0].tolist()
            images += 1
            texts += len(captions)
            for index in range(len(captions)):
                for key, sink, sign in [("same_caps", invariance, None), ("diff_caps", gaps, 1)]:
                    variants = record.get(key, {}).get(str(index), [])
                    if not variants:
                        continue
                    scores = (image_embedding @ encode_texts(variants).T)[0].tolist()
                    texts += len(variants)
                    for score in scores:
                        sink.append(abs(base[index] - score) if sign is None else base[index] - score)
    metrics = {
        "invariance_error_mean": sum(invariance) / len(invariance) if invariance else None,
        "sensitivity_gap_mean": sum(gaps) / len(gaps) if gaps else None,
        "sensitivity_pos_rate": sum(g > 0 for g in gaps) / len(gaps) if gaps else None,
    }
    return {"metrics": metrics, "encoded_images": images, "encoded_texts": texts}


def engine_settings(cache_dir: str, args, prefix_sharing: bool = True) -> EvalSettings:
    """The engine's settings for a stage, as the scripts' flags would give them."""
    return EvalSettings(device=args.device, precision=args.precision, batch_size=args.batch_size,
                        text_batch_size=args.text_batch_size, workers=args.workers, cache_dir=cache_dir,
                        cache_shard_rows=args.cache_shard_rows, bootstrap=args.bootstrap,
                        prefix_sharing=prefix_sharing, progress=False)


def shard_files(cache_dir: str, kind: str) -> set:
    """Paths of the cache's shard files of one kind (images or texts)."""
    return {os.path.join(root, name) for root, _dirs, names in os.walk(cache_dir)
            for name in names if name.startswith(kind + "-") and name.endswith(".npz")}


def rows_in(paths) -> int:
    """Embedding rows held by these shard files (one shard in memory at a time)."""
    import numpy as np

    rows = 0
    for path in paths:
        with np.load(path, allow_pickle=False) as shard:
            rows += len(shard["keys"])
    return rows


def run_engine(script_module, compute_metrics, jsonl_path: str, spec: str, cache_dir: str, args,
               prefix_sharing: bool = True) -> dict:
    """One evaluation script's code path, in-process; writes nothing but the cache."""
    metrics = list(evaluate_models(engine_settings(cache_dir, args, prefix_sharing), [spec], jsonl_path,
                                   script_module.variant_groups, compute_metrics,
                                   os.path.basename(script_module.__file__)))
    return {"metrics": metrics[0]}


def lower_bound(spec: str, jsonl_path: str, args, timed, prefix_sharing: bool) -> dict:
    """Each unique image and text of the file encoded once in the engine's batches (with
    shared prefixes computed once, or each text at its own length), no cache; plan
    reading and model loading are outside the timed part."""
    model = load_model(spec, args.device, args.precision, prefix_sharing=prefix_sharing)
    plan = build_plan(jsonl_path, run_lgip_multi.variant_groups)

    def encode_everything():
        images, failures = encode_images(model, plan.images, ShardStore(None, "images", 0), args.batch_size,
                                         args.workers, progress=False)
        tokens = tokenize_all(model, plan.texts, progress=False)
        units = np.arange(len(plan.texts))
        texts = encode_text_units(model, plan.texts, tokens, units, np.zeros_like(units), ShardStore(None, "texts", 0),
                                  args.text_batch_size, progress=False)
        return images, texts, failures

    (images, texts, failures), seconds = timed(encode_everything)
    return {"seconds": seconds, "encoded_images": len(images) - len(failures), "encoded_texts": len(texts)}


def prefix_positions(spec: str, jsonl_path: str, device: str) -> dict:
    """The stage-2 file's unique texts: token positions, and distinct prefix positions
    (what prefix sharing computes) under the model's tokenizer."""
    from lgip.models.prefix import build_prefix_trie

    model = load_model(spec, device)
    plan = build_plan(jsonl_path, run_lgip_multi.variant_groups)
    tokens = tokenize_all(model, plan.texts, progress=False)
    trie = build_prefix_trie(tokens.token_lists(np.arange(len(plan.texts))))
    return {"texts": len(plan.texts), "positions": int(tokens.lengths.sum()), "prefixes": trie.num_nodes,
            "prefix_sharing": model.prefix_sharing}


def describe_inputs(perturb_path: str, fliptypes_path: str) -> dict:
    """Unique images, captions, pairs and unique texts of both files as the engine sees
    them, and how many of the fliptypes file's texts the perturb file lacks. The plans
    are dropped before any stage runs, so they do not weigh on the memory figures."""
    counts, text_sets = {}, {}
    for name, path, groups in [("perturb", perturb_path, run_lgip_multi.variant_groups),
                               ("fliptypes", fliptypes_path, run_lgip_by_fliptype.variant_groups)]:
        plan = build_plan(path, groups)
        counts[name] = {"images": len(plan.images), "captions": len(plan.caption_record),
                        "pairs": len(plan.pair_text), "texts": len(plan.texts)}
        text_sets[name] = set(plan.texts)
    counts["fliptypes"]["texts_shared"] = len(text_sets["fliptypes"] & text_sets["perturb"])
    counts["fliptypes"]["texts_new"] = counts["fliptypes"]["texts"] - counts["fliptypes"]["texts_shared"]
    return counts


class Meter:
    """Runs one stage and records wall seconds and memory around it (optionally under
    cProfile, whose top functions are printed and saved)."""

    def __init__(self, profile_dir):
        self.profile_dir = profile_dir
        self.process_peak = maxrss_mb()
        self.peak_resets = True

    def timed(self, function, name="stage"):
        profiler = cProfile.Profile() if self.profile_dir else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        try:
            result = function()
        finally:
            if profiler:
                profiler.disable()
        seconds = time.perf_counter() - started
        if profiler:
            os.makedirs(self.profile_dir, exist_ok=True)
            path = os.path.join(self.profile_dir, f"{name}.pstats")
            profiler.dump_stats(path)
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
            print(f"\n--- profile of {name} (cumulative; saved to {path}) ---\n{text.getvalue()}")
        return result, seconds

    def stage(self, name, function):
        """`function(timed)` returns a dict with at least `seconds`; memory figures are added."""
        import gc

        gc.collect()
        self.process_peak = max(self.process_peak, maxrss_mb())
        rss_before = vm_rss_mb()
        self.peak_resets = reset_peak() and self.peak_resets
        load_before = os.getloadavg()[0]
        cpu_before, busy_before = cpu_seconds(), machine_busy_seconds()
        figures = function(lambda f: self.timed(f, name))
        cpu, busy = cpu_seconds() - cpu_before, machine_busy_seconds() - busy_before
        stage_peak = maxrss_mb()
        self.process_peak = max(self.process_peak, stage_peak)
        figures.update({"rss_before_mb": rss_before, "rss_after_mb": vm_rss_mb(),
                        "peak_stage_mb": stage_peak if self.peak_resets else None,
                        "peak_process_mb": self.process_peak, "ru_maxrss_mb": stage_peak,
                        "workers_peak_mb": maxrss_mb(resource.RUSAGE_CHILDREN),
                        "cpu_seconds": cpu, "other_cpu_seconds": max(0.0, busy - cpu),
                        "load_before": load_before, "load_after": os.getloadavg()[0]})
        return figures


def stage_body(name: str, spec: str, data: dict, cache_dir: str, args):
    """The body of one stage: a function of `timed` (which times what it is given)
    returning the stage's figures."""
    if name == "baseline":
        def run(timed):
            result, seconds = timed(lambda: baseline_release(spec, data["perturb"], args.device))
            return {**result, "seconds": seconds}
        return run
    if name in ("lower", "lower_prefix"):
        return lambda timed: lower_bound(spec, data["perturb"], args, timed, prefix_sharing=name == "lower_prefix")
    module, compute_metrics, path = ((run_lgip_by_fliptype, run_lgip_by_fliptype.fliptype_metrics, data["fliptypes"])
                                     if name == "fliptype" else (run_lgip_multi, run_lgip_multi.lgip_metrics,
                                                                 data["perturb"]))

    def run(timed):
        before = {kind: shard_files(cache_dir, kind) for kind in ("images", "texts")}
        result, seconds = timed(lambda: run_engine(module, compute_metrics, path, spec, cache_dir, args,
                                                   prefix_sharing=name != "multi_plain"))
        encoded = {kind: rows_in(shard_files(cache_dir, kind) - before[kind]) for kind in before}
        return {**result, "seconds": seconds, "encoded_images": encoded["images"], "encoded_texts": encoded["texts"],
                "timings_seconds": result["metrics"]["config"]["timings_seconds"]}
    return run


def warm_up(spec: str, device: str) -> None:
    """Load the model and encode one text and one image, then let it go: torch's one-off
    start-up costs stay out of the timings (the main process gets this from build_model)."""
    import gc

    import torch
    from PIL import Image

    model = load_model(spec, device)
    tokens = model.tokenize(["a red dog on the street"])
    model.encode_tokens(torch.as_tensor(tokens.ids, dtype=torch.int64), tokens.lengths)
    model.encode_token_rows([np.asarray(tokens.ids[0, :tokens.lengths[0]])])
    model.encode_images(model.image_transform(Image.new("RGB", (640, 480)))[None])
    del model, tokens
    gc.collect()


def _isolated_stage(name, spec, data, cache_dir, args, profile_dir, queue) -> None:
    """Child process: warm up, run one stage, send its figures (or the error) back."""
    import multiprocessing

    multiprocessing.set_start_method("fork", force=True)  # what the scripts' DataLoader workers get on Linux
    try:
        warm_up(spec, args.device)
        queue.put(("ok", Meter(profile_dir).stage(name, stage_body(name, spec, data, cache_dir, args))))
    except BaseException as err:  # reported by the parent
        queue.put(("error", f"{type(err).__name__}: {err}"))


def run_isolated(name, spec, data, cache_dir, args, profile_dir) -> dict:
    """One stage in a fresh (spawned) Python process, so its memory figures start from the
    same point as a script run on its own, not from what earlier stages left behind."""
    import multiprocessing
    import queue as queue_module

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_isolated_stage, args=(name, spec, data, cache_dir, args, profile_dir, results))
    child.start()
    while True:
        try:
            status, payload = results.get(timeout=5)
            break
        except queue_module.Empty:
            if not child.is_alive():
                raise RuntimeError(f"stage {name}: its process ended with code {child.exitcode} before reporting")
    child.join()
    if status != "ok":
        raise RuntimeError(f"stage {name} failed in its process: {payload}")
    return payload


# ---------------------------------------------------------------------------------------
# Whole processes
# ---------------------------------------------------------------------------------------

# Starts the measured command from a small process of its own: a child forked from this
# (large) process would count this process's pages in its peak memory until it execs.
LAUNCHER = """import json, os, sys, time
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as handle:
    json.dump({"seconds": time.perf_counter() - started, "cpu_seconds": usage.ru_utime + usage.ru_stime,
               "peak_mb": usage.ru_maxrss / 1024}, handle)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed_process(command, cwd: str) -> dict:
    """Run `command` as a fresh process: wall seconds from its start to its exit, CPU
    seconds and peak resident memory (ru_maxrss from wait4: the process and the workers
    it waited for) and its output."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="bench_process_") as folder:
        usage_path = os.path.join(folder, "usage.json")
        result = subprocess.run([sys.executable, "-c", LAUNCHER, usage_path, *command], cwd=cwd, capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])} ... failed ({result.returncode}):\n{result.stderr[-2000:]}")
        with open(usage_path, encoding="utf-8") as handle:
            usage = json.load(handle)
    return {**usage, "stdout": result.stdout}


def run_processes(spec: str, workdir: str, args) -> dict:
    """The release's loop, run_lgip_multi.py with an empty cache, and its warm rerun,
    each a fresh Python process on --process-n records of their own, as a user runs them
    (the scripts' default flags but the bench's device and precision)."""
    data = prepare_data(os.path.join(workdir, "process_data"), args.process_n, args.seed)
    cache, output = os.path.join(workdir, "process_cache"), os.path.join(workdir, "process_output")
    shutil.rmtree(cache, ignore_errors=True)
    script = [sys.executable, os.path.join(REPO, "run_lgip_multi.py"), "--input", data["perturb"], "--models", spec,
              "--cache-dir", cache, "--output-dir", output, "--quiet", "--device", args.device,
              "--precision", args.precision]
    commands = {"release": [sys.executable, os.path.abspath(__file__), "--release-loop", data["perturb"],
                            "--model", spec, "--device", args.device],
                "cold": script, "warm": script}
    runs = {}
    for name in PROCESSES:
        print(f"running the {name} process ...", flush=True)
        runs[name] = timed_process(commands[name], REPO)
        print(f"  {name}: {runs[name]['seconds']:.2f} s", flush=True)
    stem = os.path.splitext(os.path.basename(data["perturb"]))[0]
    tag = parse_spec(spec).tag
    with open(os.path.join(output, f"{stem}__LGIP_{tag}.metrics.json"), encoding="utf-8") as handle:
        written = json.load(handle)
    release = json.loads(runs["release"].pop("stdout").strip().splitlines()[-1])
    for name in ("cold", "warm"):
        runs[name].pop("stdout")
    return {"runs": runs, "records": args.process_n,
            "metric_max_abs_diff": max(abs(release[k] - written[k]) for k in METRIC_KEYS)}


def release_loop_main(jsonl_path: str, spec: str, device: str) -> None:
    """`--release-loop`: the release's loop as a process of its own; prints its metrics."""
    print(json.dumps(baseline_release(spec, jsonl_path, device)["metrics"]))


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------

def ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


def print_table(stages: dict, counts: dict) -> None:
    header = (f"{'stage':<12} {'wall s':>8} {'cpu s':>7} {'other':>6} {'images':>7} {'texts':>8} {'img/s':>8} "
              f"{'txt/s':>9} {'enc img':>8} {'enc txt':>8} {'peak MB':>8} {'proc pk':>8} {'RSS in':>7} {'RSS out':>7}")
    print("\n" + header + "\n" + "-" * len(header))
    for name in STAGES:
        if name not in stages:
            continue
        s = stages[name]
        file_counts = counts["fliptypes" if name == "fliptype" else "perturb"]
        peak = "n/a" if s["peak_stage_mb"] is None else f"{s['peak_stage_mb']:.0f}"
        print(f"{name:<12} {s['seconds']:>8.2f} {s['cpu_seconds']:>7.1f} {s['other_cpu_seconds']:>6.1f} "
              f"{file_counts['images']:>7} {file_counts['texts']:>8} "
              f"{file_counts['images'] / s['seconds']:>8.1f} {file_counts['texts'] / s['seconds']:>9.1f} "
              f"{s['encoded_images']:>8} {s['encoded_texts']:>8} {peak:>8} {s['peak_process_mb']:>8.0f} "
              f"{s['rss_before_mb']:>7.0f} {s['rss_after_mb']:>7.0f}")
    print("images, texts: unique in the stage's input; img/s, txt/s: those per wall second; enc img/txt: rows "
          "actually encoded;\ncpu s: this process and its DataLoader workers; other: CPU seconds other processes "
          "on the machine used meanwhile\n(well above 0: the machine was shared and the figures are noisy); "
          "peak MB: this process's peak during the stage\n(ru_maxrss after a reset at the stage start); proc pk: "
          "process peak so far; RSS in/out: VmRSS before and after (MB).")
    busy = [name for name, s in stages.items() if s["other_cpu_seconds"] > BUSY_SHARE * s["seconds"] * (os.cpu_count() or 1)]
    if busy:
        print(f"warning: other processes used over {BUSY_SHARE:.0%} of the CPUs during {', '.join(busy)}; "
              f"rerun on a quiet machine for figures you can compare")


def print_processes(processes: dict) -> None:
    """The whole-process runs, side by side, with their speed-ups over the release's."""
    runs = processes["runs"]
    header = f"{'process':<34} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'x release':>10}"
    print(f"\nwhole processes on {processes['records']} records (fresh Python each, imports and model loading "
          f"included):\n{header}\n" + "-" * len(header))
    names = {"release": "release's loop (--release-loop)", "cold": "run_lgip_multi.py, empty cache",
             "warm": "run_lgip_multi.py, warm rerun"}
    for name in PROCESSES:
        run = runs[name]
        print(f"{names[name]:<34} {run['seconds']:>8.2f} {run['cpu_seconds']:>8.1f} {run['peak_mb']:>8.0f} "
              f"{runs['release']['seconds'] / run['seconds']:>9.2f}x")
    print(f"largest |metric(release process) - metric(run_lgip_multi.py)|: {processes['metric_max_abs_diff']:.2e}")


def check_targets(figures: dict, n: int) -> list:
    """(name, value, met) for each target that this run can judge."""
    ratios, results = figures["ratios"], []
    if ratios.get("baseline/multi") is not None:
        met = ratios["baseline/multi"] >= TARGET_BASELINE_OVER_MULTI and (figures["metric_max_abs_diff"] or 0) < METRIC_TOLERANCE
        results.append((f"2 at least {TARGET_BASELINE_OVER_MULTI:g}x faster than 1, metrics within {METRIC_TOLERANCE:g}",
                        f"{ratios['baseline/multi']:.2f}x, diff {figures['metric_max_abs_diff']:.2e}", met))
    if ratios.get("multi/lower_prefix") is not None:
        results.append((f"2 at most {TARGET_MULTI_OVER_LOWER:g}x the time of its lower bound 6",
                        f"{ratios['multi/lower_prefix']:.2f}x", ratios["multi/lower_prefix"] <= TARGET_MULTI_OVER_LOWER))
    if ratios.get("baseline/fliptype") is not None:
        results.append((f"3 at least {TARGET_BASELINE_OVER_FLIPTYPE:g}x faster than 1",
                        f"{ratios['baseline/fliptype']:.2f}x", ratios["baseline/fliptype"] >= TARGET_BASELINE_OVER_FLIPTYPE))
    if "fliptype" in figures["stages"]:
        share = figures["stages"]["fliptype"]["timings_seconds"].get("tokenise", 0) / figures["stages"]["fliptype"]["seconds"]
        results.append((f"3 spends under {TARGET_TOKENISE_SHARE:.0%} of its time tokenising (the target is for "
                        f"--n 20000; this is --n {n})", f"{share:.1%}", share < TARGET_TOKENISE_SHARE))
    processes = figures.get("processes")
    if processes:
        runs = processes["runs"]
        for name, target in (("cold", TARGET_PROCESS_COLD), ("warm", TARGET_PROCESS_WARM)):
            speedup = runs["release"]["seconds"] / runs[name]["seconds"]
            results.append((f"whole process: run_lgip_multi.py {name} at least {target:g}x faster than the release's "
                            f"(on {processes['records']} records)", f"{speedup:.2f}x", speedup >= target))
    peaks = [s["peak_process_mb"] for s in figures["stages"].values()]
    if peaks:
        results.append((f"peak resident memory below {TARGET_PEAK_MB} MB (the target is for --n 20000; this is --n {n})",
                         f"{max(peaks):.0f} MB", max(peaks) < TARGET_PEAK_MB))
    return results


# ---------------------------------------------------------------------------------------
# Command line and recipe
# ---------------------------------------------------------------------------------------

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=positive_int, default=N_RECORDS, help="records (images) in the synthetic set (default: %(default)s)")
    parser.add_argument("--seed", type=nonnegative_int, default=SEED, help="seed of the captions and images (default: %(default)s)")
    parser.add_argument("--workdir", default=None,
                        help="folder for data, model, cache and profiles; kept, and its data reused when --n and "
                             "--seed match (default: a temporary folder, removed at the end)")
    parser.add_argument("--model", default=None, metavar="SPEC",
                        help="evaluate this model spec instead of the bench's tiny random CLIP "
                             "(e.g. openclip:ViT-B-32@laion2b_s34b_b79k on a machine with the weights; the baseline "
                             "stage needs an openclip: spec, the other stages take any)")
    parser.add_argument("--device", default=DEVICE, help="torch device for every stage (default: %(default)s)")
    parser.add_argument("--precision", default=PRECISION, choices=["fp32", "fp16", "bf16", "amp"],
                        help="the engine's precision (the baseline stays fp32, as the release) (default: %(default)s)")
    parser.add_argument("--process-n", type=nonnegative_int, default=PROCESS_N,
                        help="records of the whole-process runs, on data of their own; 0 skips them "
                             "(default: %(default)s)")
    parser.add_argument("--release-loop", default=None, metavar="JSONL", help=argparse.SUPPRESS)
    parser.add_argument("--embed-dim", type=positive_int, default=EMBED_DIM, help="tiny model: embedding size (default: %(default)s)")
    parser.add_argument("--width", type=positive_int, default=WIDTH,
                        help="tiny model: width of both towers (default: %(default)s)")
    parser.add_argument("--layers", type=positive_int, default=LAYERS,
                        help="tiny model: layers of both towers (default: %(default)s)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated stages to run, of {','.join(STAGES)} (default: all). fliptype after "
                             "multi uses the cache multi filled; alone it starts from an empty cache")
    parser.add_argument("--skip-baseline", action="store_true", help="drop the baseline stage (slow for large --n)")
    parser.add_argument("--workers", type=nonnegative_int, default=WORKERS,
                        help="DataLoader workers for the engine stages (default: %(default)s, lgip.cli.default_workers())")
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help="engine: images per batch (default: %(default)s)")
    parser.add_argument("--text-batch-size", type=positive_int, default=TEXT_BATCH_SIZE,
                        help="engine: texts per batch (default: %(default)s)")
    parser.add_argument("--bootstrap", type=nonnegative_int, default=BOOTSTRAP,
                        help="engine: bootstrap resamples, timed with the stage (default: %(default)s)")
    parser.add_argument("--cache-shard-rows", type=positive_int, default=CACHE_SHARD_ROWS,
                        help="engine: embeddings per cache file (default: %(default)s)")
    parser.add_argument("--isolate", action="store_true",
                        help="run each stage in a fresh Python process (spawned; the cache carries over on disk), so "
                             "each stage's memory starts where a script run on its own would, not from what earlier "
                             "stages left in this process's heap")
    parser.add_argument("--profile", action="store_true",
                        help="run each stage under cProfile, print its top functions and save <workdir>/profiles/"
                             "<stage>.pstats (adds overhead to the timings)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"--stages: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if args.skip_baseline and "baseline" in stages:
        stages.remove("baseline")
    if args.n < 1:
        parser.error("--n: expected at least 1")
    args.stage_list = [s for s in STAGES if s in stages]
    return args


def main():
    import torch

    args = parse_args()
    if args.release_loop:
        return release_loop_main(args.release_loop, args.model, args.device)
    workdir = args.workdir or tempfile.mkdtemp(prefix="lgip_bench_")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    version = repository_version()
    print(f"bench_eval: --n {args.n}, stages {','.join(args.stage_list)}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, workers {args.workers}, cpus {os.cpu_count()}, "
          f"repository {version}, workdir {workdir}")
    try:
        # 1. Data: base set, images, and the two perturbed files from the same base.
        data = prepare_data(os.path.join(workdir, "data"), args.n, args.seed)
        print(f"data: {'reused' if data['reused'] else 'made'} in {data['seconds']:.1f} s "
              f"({args.n} JPEGs, {data['image_mb']:.0f} MB)")
        counts = describe_inputs(data["perturb"], data["fliptypes"])
        for name, c in counts.items():
            print(f"{name}: {c['images']} images, {c['captions']} captions, {c['pairs']} pairs, {c['texts']} unique texts")
        print(f"fliptypes file: {counts['fliptypes']['texts_shared']} texts shared with the perturb file, "
              f"{counts['fliptypes']['texts_new']} new (the two generators draw in different orders)")

        # 2. Model: the bench's tiny CLIP (or --model), one spec for every stage.
        if args.model:
            spec = args.model
        else:
            spec = build_model(os.path.join(workdir, "model"), args.embed_dim, args.width, args.layers)
        print(f"model: {spec}")
        prefixes = prefix_positions(spec, data["perturb"], args.device)
        print(f"perturb file under the model's tokenizer: {prefixes['texts']} unique texts, {prefixes['positions']} "
              f"token positions, {prefixes['prefixes']} distinct prefix positions ({1 - prefixes['prefixes'] / max(1, prefixes['positions']):.0%} "
              f"repeat a prefix; prefix sharing {'applies' if prefixes['prefix_sharing'] else 'does not apply'})")

        # 3. The stages, in order, each timed with its memory (in this process, or each in
        #    a fresh one with --isolate); fliptype finds the cache multi filled.
        cache_dir = os.path.join(workdir, "cache")
        shutil.rmtree(cache_dir, ignore_errors=True)
        profile_dir = os.path.join(workdir, "profiles") if args.profile else None
        meter = Meter(profile_dir)
        stages = {}
        for name in args.stage_list:
            print(f"running {name}{' in a fresh process' if args.isolate else ''} ...", flush=True)
            if args.isolate:
                stages[name] = run_isolated(name, spec, data, cache_dir, args, profile_dir)
            else:
                stages[name] = meter.stage(name, stage_body(name, spec, data, cache_dir, args))
            print(f"  {name}: {stages[name]['seconds']:.2f} s", flush=True)
        processes = run_processes(spec, workdir, args) if args.process_n > 0 else None

        # 4. Figures: table, ratios, metric agreement, targets.
        seconds = {name: s["seconds"] for name, s in stages.items()}
        figures = {
            "settings": {"n": args.n, "seed": args.seed, "model": spec, "device": args.device,
                         "precision": args.precision, "process_n": args.process_n, "repository": version,
                         "torch_threads": torch.get_num_threads(), "workers": args.workers, "cpus": os.cpu_count(),
                         "batch_size": args.batch_size, "text_batch_size": args.text_batch_size,
                         "bootstrap": args.bootstrap, "profiled": args.profile,
                         "isolated_stages": args.isolate, "versions": library_versions()},
            "data": {**counts, "image_mb": data["image_mb"], "seconds": data["seconds"], "reused": data["reused"],
                     "prefix_positions": prefixes},
            "stages": {name: {k: v for k, v in s.items() if k != "metrics"} for name, s in stages.items()},
            "ratios": {"baseline/multi": ratio(seconds.get("baseline"), seconds.get("multi")),
                       "multi_plain/multi": ratio(seconds.get("multi_plain"), seconds.get("multi")),
                       "multi/lower_prefix": ratio(seconds.get("multi"), seconds.get("lower_prefix")),
                       "multi_plain/lower": ratio(seconds.get("multi_plain"), seconds.get("lower")),
                       "lower/lower_prefix": ratio(seconds.get("lower"), seconds.get("lower_prefix")),
                       "baseline/fliptype": ratio(seconds.get("baseline"), seconds.get("fliptype"))},
            "metrics": {},
            "metric_max_abs_diff": None,
            "processes": processes,
        }
        for name in ("baseline", "multi", "multi_plain"):
            if name in stages:
                figures["metrics"][name] = {k: stages[name]["metrics"][k] for k in METRIC_KEYS}
        if "fliptype" in stages:
            m = stages["fliptype"]["metrics"]
            figures["metrics"]["fliptype"] = {"invariance_error_mean": m["invariance_error_mean"],
                                              "global_gap_mean": m["global_sensitivity"]["gap_mean"],
                                              "global_pos_rate": m["global_sensitivity"]["pos_rate"]}
        if "baseline" in stages and "multi" in stages:
            figures["metric_max_abs_diff"] = max(abs(figures["metrics"]["baseline"][k] - figures["metrics"]["multi"][k])
                                                 for k in METRIC_KEYS)

        print_table(stages, counts)
        print("DataLoader workers' peak so far (RUSAGE_CHILDREN of the stage's process, MB): "
              + ", ".join(f"{name} {s['workers_peak_mb']:.0f}" for name, s in stages.items()))
        for name in ("multi", "fliptype", "multi_plain"):
            if name in stages:
                s = stages[name]
                print(f"{name} engine timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in s["timings_seconds"].items())
                      + f"; rows encoded: images {s['encoded_images']}, texts {s['encoded_texts']}")
        if "fliptype" in stages and "multi" in stages:
            print(f"fliptype after multi: {counts['fliptypes']['texts_new']} of its {counts['fliptypes']['texts']} "
                  f"texts are new, {stages['fliptype']['encoded_texts']} text rows were encoded")
        print("ratios: " + ", ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in figures["ratios"].items()))
        for name, values in figures["metrics"].items():
            print(f"metrics {name}: " + ", ".join(f"{k} {v:.7f}" for k, v in values.items()))
        if figures["metric_max_abs_diff"] is not None:
            print(f"largest |metric(1) - metric(2)|: {figures['metric_max_abs_diff']:.2e}")
        if "multi" in stages and "multi_plain" in stages:
            print("largest |metric(2) - metric(4)| (prefix sharing on and off): " + format(max(
                abs(figures["metrics"]["multi"][k] - figures["metrics"]["multi_plain"][k]) for k in METRIC_KEYS), ".2e"))
        if "fliptype" in stages:
            share = stages["fliptype"]["timings_seconds"].get("tokenise", 0) / stages["fliptype"]["seconds"]
            print(f"fliptype tokenising: {stages['fliptype']['timings_seconds'].get('tokenise', 0):.2f} s, "
                  f"{share:.1%} of the stage")
        if processes:
            print_processes(processes)
        figures["targets"] = [{"target": t, "value": v, "met": m} for t, v, m in check_targets(figures, args.n)]
        print("targets:")
        for target in figures["targets"]:
            print(f"  [{'met' if target['met'] else 'MISSED'}] {target['target']}: {target['value']}")
        if args.json:
            write_json(args.json, figures)
            print(f"wrote {args.json}")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    run_cli(main)
