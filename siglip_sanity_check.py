"""A quick look at a few records: for seeded random records with at least one flip,
the image, one caption, its score, and each flip's score and change, as the release
prints them. `--compare-padding` scores every text twice for SigLIP/SigLIP2, padded to
max_length (as trained) and to the longest text of its batch (the release), side by
side, so the effect of the padding can be seen on real captions.
"""
import argparse
import os
import random

from lgip.cli import nonnegative_int, positive_int, run_cli
from lgip.engine import Caption, EvalSettings, PairPlan, score_plan
from lgip.io import InputError, check_captions, iter_jsonl, resolve_image_path
from lgip.models import PRECISIONS, load_model, parse_spec
from lgip.models.device import resolve_device

_DIR = os.path.dirname(os.path.abspath(__file__))
JSONL_PATH = os.path.join(_DIR, "lgip_coco_native5_train2017_with_perturb.jsonl")
MODEL = "hf:google/siglip-base-patch16-224"
DEVICE = "auto"
NUM_EXAMPLES = 10
MAX_FLIPS_PER_CAP = 5
SEED = 42  # the release seeds Python's random with 42
# A handful of texts: small batches, no cache, no worker processes, no progress bars.
SANITY_SETTINGS = EvalSettings(batch_size=8, text_batch_size=64, workers=0, cache_dir=None, progress=False)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=JSONL_PATH, help="perturbed JSONL (default: %(default)s)")
    parser.add_argument("--model", default=MODEL, help="model spec, as in the other scripts (default: %(default)s)")
    parser.add_argument("--num-examples", type=positive_int, default=NUM_EXAMPLES,
                        help="records to show (default: %(default)s)")
    parser.add_argument("--max-flips", type=positive_int, default=MAX_FLIPS_PER_CAP,
                        help="flips shown per caption (default: %(default)s)")
    parser.add_argument("--seed", type=nonnegative_int, default=SEED,
                        help="which records and captions are drawn (default: %(default)s)")
    parser.add_argument("--device", default=DEVICE, help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="(default: %(default)s)")
    parser.add_argument("--siglip-padding", choices=["max_length", "longest"], default="max_length",
                        help="SigLIP text padding when not comparing (default: %(default)s)")
    parser.add_argument("--compare-padding", action="store_true", help="show max_length and longest padding side by side")
    return parser.parse_args()


def select_examples(path, num_examples, max_flips, rng):
    """The release's draw: shuffle the records that have a flip, take the first N; per
    record pick a caption with flips, then at most `max_flips` of its flips. Streams the
    file twice instead of holding it. Returns [(line, image path, caption index,
    caption, flips)]."""
    with_flips = [line_no for line_no, record in iter_jsonl(path)
                  if isinstance(record.get("diff_caps"), dict) and any(record["diff_caps"].values())]
    rng.shuffle(with_flips)
    chosen_lines = with_flips[:num_examples]
    wanted = set(chosen_lines)
    records = {line_no: record for line_no, record in iter_jsonl(path) if line_no in wanted}
    examples = []
    for line_no in chosen_lines:
        record = records[line_no]
        captions = check_captions(record, path, line_no)
        flips_of = [Caption(record, str(i), text, path, line_no).strings("diff_caps") for i, text in enumerate(captions)]
        candidates = [i for i, flips in enumerate(flips_of) if flips]
        if not candidates or not isinstance(record.get("image_path"), str):
            continue
        index = rng.choice(candidates)
        flips = flips_of[index]
        if len(flips) > max_flips:
            flips = rng.sample(flips, max_flips)
        examples.append((line_no, resolve_image_path(record["image_path"], path), index, captions[index], flips))
    return examples


def score_examples(args, examples, padding, device):
    """Per example, [caption score, flip scores...]: the caption and its flips are one
    group, encoded together as the release did (this matters for longest padding)."""
    model = load_model(args.model, device, args.precision, siglip_padding=padding)
    plan = PairPlan()
    for line_no, image_path, _index, caption, flips in examples:
        plan.add_record(line_no, image_path, [caption], [[[(caption, "orig")] + [(flip, "diff") for flip in flips]]])
    plan.finish()
    scores = score_plan(model, plan, SANITY_SETTINGS)
    by_caption = [[] for _ in examples]
    for pair, caption_row in enumerate(plan.pair_caption):
        by_caption[caption_row].append(None if not scores.pair_valid[pair] else float(scores.pair_score[pair]))
    return by_caption, model


def main():
    args = parse_args()
    parse_spec(args.model)  # a typo in the spec fails before the file is read
    device = resolve_device(args.device)
    examples = select_examples(args.input, args.num_examples, args.max_flips, random.Random(args.seed))
    if not examples:
        raise InputError(f"{args.input}: no record has a flip in 'diff_caps'")
    paddings = ["max_length", "longest"] if args.compare_padding else [args.siglip_padding]
    results = [score_examples(args, examples, padding, device) for padding in paddings]
    model = results[0][1]
    if args.compare_padding and not getattr(model, "is_siglip", False):
        print(f"note: {args.model} is not SigLIP: its padding does not change, both columns are the same")
    print(f"{len(examples)} records with flips from {args.input} (seed {args.seed}), model {args.model}")
    header = " | ".join(f"{padding:>10}" for padding in paddings)
    for number, (line_no, image_path, index, caption, flips) in enumerate(examples):
        print("\n" + "=" * 80)
        print(f"[Sample {number + 1}] line {line_no}: {image_path}")
        if any(score is None for score in results[0][0][number]):
            print("  [WARN] the image could not be read; skipped")
            continue
        columns = [scores[number] for scores, _model in results]
        print(f"  caption {index}: {caption}")
        print(f"  sim(image, ORIG)  {header}")
        print("                    " + " | ".join(f"{column[0]:10.4f}" for column in columns))
        for position, flip in enumerate(flips, start=1):
            deltas = [column[position] - column[0] for column in columns]
            print(f"  - FLIP: {flip}")
            print("    sim(image, FLIP) " + " | ".join(f"{column[position]:10.4f}" for column in columns)
                  + "   change vs ORIG " + " | ".join(f"{delta:+.4f}" for delta in deltas))


if __name__ == "__main__":
    run_cli(main)
