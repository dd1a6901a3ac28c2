"""The whole LGIP pipeline, offline, in about a minute: the first command to run.

It draws a small sample of images with five captions each in COCO's format, builds the
base JSONL with build_base_jsonl.py, runs the generators, evaluates two tiny models it
builds on the spot (an open_clip CLIP and a transformers SigLIP with RANDOM weights, so
the numbers only show that the pipeline works), and writes the table and the plots with
lgip_report.py. Each stage runs as its own script, exactly as you would run it.

`--models SPEC ...` evaluates real models instead (on a machine that has their weights).
The tiny-model builders here are also what the test suite uses.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence

_DIR = os.path.dirname(os.path.abspath(__file__))
OUTPUT_DIR = os.path.join(_DIR, "lgip_quickstart_out")
N_IMAGES = 24
CAPTIONS_PER_IMAGE = 6  # COCO has 5-7 per image; the builder keeps the first five
SEED = 0
BOOTSTRAP = 200

CAPTIONS: List[str] = [
    "A man riding a horse.",
    "Two dogs playing in the park.",
    "A red car parked on the street.",
    "A blue bus driving down the road.",
    "Three people standing next to a train.",
    "A cat sleeping on a green couch.",
    "A white bird sitting on a branch.",
    "Two boats floating on the water.",
    "A person riding a bicycle down the street.",
    "A yellow truck parked near a building.",
    "One black dog running on the beach.",
    "Four horses grazing in a field.",
    "A green train pulling into the station.",
    "A woman walking her dog in the park.",
    "Five birds flying over the lake.",
    "A small brown cat sitting on a table.",
    "Two red buses parked side by side.",
    "A man standing next to his blue car.",
    "A boy riding a red bicycle.",
    "A large white boat docked at the pier.",
    "Three cats playing with a ball.",
    "A person holding an orange umbrella.",
    "Two horses pulling a wooden cart.",
    "A yellow bus stopped at the corner.",
    "A dog catching a frisbee in the air.",
    "One person sitting on a bench.",
    "A black truck driving on the highway.",
    "Four people riding bicycles on a path.",
    "A brown horse standing in the snow.",
    "A blue bird perched on a fence.",
    "Two trains passing each other.",
    "A girl feeding a white horse.",
    "Five cars waiting at a red light.",
    "A cat looking out of a window.",
    "A man fixing his green truck.",
    "Three boats sailing on the sea.",
    "A dog sitting in the back of a car.",
    "A woman riding a brown horse on the beach.",
    "Two people standing by a yellow train.",
    "A gray cat lying on a bed.",
    "One red boat on a calm river.",
    "A group of people waiting for the bus.",
    "Four dogs running across the grass.",
    "A bird standing on the sand.",
    "A man riding a motorcycle past a truck.",
    "Two children flying a kite in the park.",
    "A purple bicycle leaning against a wall.",
    "Three white trucks parked in a row.",
    "A black and white cat on a chair.",
    "A person walking across the street.",
    "Five horses running in a field.",
    "A pink bus full of people.",
    "Two birds sitting on a wire.",
    "A green car driving through the city.",
    "One dog sleeping next to a cat.",
    "A train crossing a bridge over the river.",
    "A man and a woman riding horses.",
    "Three people on a small boat.",
    "A red truck carrying wood.",
    "A blue bicycle parked next to a tree.",
]

OPENCLIP_MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    # vocab 49408 and context 77: what the bundled SimpleTokenizer produces.
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
OPENCLIP_PREPROCESS_CFG = {
    "size": 32,
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}

SIGLIP_MAX_LENGTH = 64
SIGLIP_SPM_VOCAB = 160  # a soft limit (hard_vocab_limit=False): ~60 captions may give fewer
# T5/SigLIP layout of the sentencepiece ids: <pad>=0, </s>=1, <unk>=2, no <bos>.
# SiglipTokenizer pads with "</s>", so pad and eos are both id 1, as in google/siglip-*.
SPM_PAD_ID, SPM_EOS_ID, SPM_UNK_ID = 0, 1, 2


def build_tiny_openclip(folder) -> str:
    """Build a random open_clip CLIP (64-d embeddings, 32 px images, 2+2 layers) into
    `folder` as `open_clip_config.json` + `open_clip_model.safetensors`, check that it
    loads back through `local-dir:` and encodes on the CPU, and return the model spec
    `openclip:local-dir:FOLDER`. The weights are stored in fp16 (about 7 MB; the model
    loads them into fp32), and get_tokenizer on the folder gives SimpleTokenizer(77)."""
    import open_clip
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = CLIP(**OPENCLIP_MODEL_CFG)
    # safetensors refuses tensors that share storage and wants contiguous ones: clone each.
    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous().clone()
             for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    with open(folder / "open_clip_config.json", "w", encoding="utf-8") as handle:
        json.dump({"model_cfg": OPENCLIP_MODEL_CFG, "preprocess_cfg": OPENCLIP_PREPROCESS_CFG}, handle, indent=2)

    # Load it back the way a user would and make sure both towers run.
    loaded, _, _ = open_clip.create_model_and_transforms("local-dir:" + str(folder))
    tokenizer = open_clip.get_tokenizer("local-dir:" + str(folder))
    loaded.eval()
    with torch.no_grad():
        text = loaded.encode_text(tokenizer(["a red dog"]))
        image = loaded.encode_image(torch.zeros(1, 3, 32, 32))
    if text.shape != (1, 64) or image.shape != (1, 64):
        raise RuntimeError(f"tiny open_clip model gave shapes {tuple(text.shape)}, {tuple(image.shape)}")
    return "openclip:local-dir:" + str(folder)


def _canonical(text: str) -> str:
    """Lower-case, drop punctuation, squeeze spaces: what SiglipTokenizer does to a text
    before sentencepiece sees it, so the trained pieces match what it will be asked."""
    import re
    import string

    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text).strip()


def build_tiny_siglip(folder, captions: Sequence[str] = CAPTIONS) -> str:
    """Build a random transformers SigLIP (32-d, 32 px images, 2+2 layers) into `folder`
    with save_pretrained, beside a sentencepiece SiglipTokenizer trained on `captions`
    (pad = eos = "</s>" = id 1, unk = id 2, max length 64) and a 32x32
    SiglipImageProcessor, so that AutoModel / AutoTokenizer / AutoImageProcessor /
    AutoProcessor all load the folder offline. Returns the spec `hf:FOLDER`."""
    import sentencepiece as spm
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()  # in memory: a model_prefix would be recorded in the file
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([_canonical(c) for c in captions]),
        model_writer=model_bytes,
        model_type="unigram",
        vocab_size=SIGLIP_SPM_VOCAB,
        hard_vocab_limit=False,
        character_coverage=1.0,
        pad_id=SPM_PAD_ID, pad_piece="<pad>",
        eos_id=SPM_EOS_ID, eos_piece="</s>",
        unk_id=SPM_UNK_ID, unk_piece="<unk>",
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    vocab_file = folder / "spiece.model"
    vocab_file.write_bytes(model_bytes.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(vocab_file), model_max_length=SIGLIP_MAX_LENGTH)
    if (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) != (SPM_EOS_ID, SPM_EOS_ID, SPM_UNK_ID):
        raise RuntimeError("tiny SigLIP tokenizer has unexpected special ids: pad "
                           f"{tokenizer.pad_token_id}, eos {tokenizer.eos_token_id}, unk {tokenizer.unk_token_id}")

    config = SiglipConfig(
        text_config=dict(
            vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=SIGLIP_MAX_LENGTH,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2,
        ),
    )
    torch.manual_seed(0)
    model = SiglipModel(config).eval()
    image_processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" on stderr, once per fixture
    try:
        model.save_pretrained(str(folder))
        # The processor writes tokenizer_config.json, spiece.model and processor_config.json
        # (which holds the image processor's settings for AutoImageProcessor too).
        SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return "hf:" + str(folder)


def draw_images(folder, n: int, size=(64, 48), seed: int = 0) -> List[str]:
    """Draw `n` distinct RGB JPEGs (coloured rectangles and ellipses on a plain
    background, fixed by `seed`) into `folder` as img_000.jpg, ... and return their paths."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    width, height = size
    paths, seen = [], set()
    for i in range(n):
        while True:
            image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            for _ in range(rng.randint(1, 3)):
                x0, y0 = rng.randrange(width - 8), rng.randrange(height - 8)
                x1, y1 = rng.randrange(x0 + 6, width + 1), rng.randrange(y0 + 6, height + 1)
                colour = tuple(rng.randrange(256) for _ in range(3))
                (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x1, y1], fill=colour)
            key = image.tobytes()
            if key not in seen:
                seen.add(key)
                break
        path = folder / f"img_{i:03d}.jpg"
        image.save(path, format="JPEG", quality=90)
        paths.append(str(path))
    return paths


# ---------------------------------------------------------------------------
# The quickstart recipe
# ---------------------------------------------------------------------------

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
    print(f"\n[{number}/{total}] {title}\n$ python {script} {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, os.path.join(_DIR, script), *args], cwd=_DIR)
    if result.returncode != 0:
        sys.exit(f"quickstart stopped: {script} exited with code {result.returncode}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=OUTPUT_DIR, help="where everything goes (default: %(default)s)")
    parser.add_argument("--models", nargs="+", metavar="SPEC", default=None,
                        help="evaluate these model specs instead of two tiny random models built here")
    parser.add_argument("--n-images", type=int, default=N_IMAGES, help="images to draw (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the drawn images and captions (default: %(default)s)")
    return parser.parse_args()


def main():
    args = parse_args()
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
    run_stage(6, total, "LGIP metrics per model", "run_lgip_multi.py", "--input", perturbed, *common)
    run_stage(7, total, "LGIP metrics per flip type (the cache is warm: nothing is encoded again for "
              "texts already seen)", "run_lgip_by_fliptype.py", "--input", fliptypes, *common)
    metric_files = sorted(glob.glob(os.path.join(out, "*__LGIP_*.metrics.json")))
    metric_files = [path for path in metric_files if not path.endswith("__LGIP_ALL.metrics.json")]
    run_stage(8, total, "the report", "lgip_report.py", *metric_files, "--csv", os.path.join(out, "lgip_table.csv"),
              "--plot-frontier", os.path.join(out, "lgip_frontier.png"),
              "--plot-types", os.path.join(out, "lgip_flip_types.png"))

    print(f"\nDone in {time.perf_counter() - started:.0f} s. Everything is in {out}:")
    for label, path in [("base JSONL", base), ("perturbed JSONL", perturbed), ("with flip types", fliptypes),
                        ("metric files", os.path.join(out, "*.metrics.json")), ("table", os.path.join(out, "lgip_table.csv")),
                        ("frontier plot", os.path.join(out, "lgip_frontier.png")),
                        ("flip-type plot", os.path.join(out, "lgip_flip_types.png")),
                        ("embedding cache", os.path.join(out, ".lgip_cache"))]:
        print(f"  {label:>16}: {path}")
    print("\nThe real run (COCO captions + images, the paper's nine models; see README 'Reproduce the paper'):\n"
          "  python build_base_jsonl.py --download\n"
          "  python diff_gen_caption.py && python make_perturb_with_fliptypes.py\n"
          "  python run_lgip_multi.py && python run_lgip_by_fliptype.py\n"
          "  python lgip_report.py *.metrics.json --plot-frontier frontier.png --plot-types flip_types.png --correlate")


if __name__ == "__main__":
    main()
