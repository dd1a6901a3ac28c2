"""Labelled images x models -> semantic certification: how far each image embedding can
move along a text-defined edit before its zero-shot prediction changes, solved exactly.

For each image, the zero-shot prediction (the class whose prompt embedding scores
highest) and, for every edit of the edits file ("a photo of a {} on a plate"), the
transformed embedding z(phi), phi in [0, 1], moving from the image toward the edited
prompt of its predicted class (`--transform rotate|slerp|lerp`). Every class score along
the way has a closed form, so [0, 1] splits exactly into intervals, each with its
predicted class; the first interval's end is the certified extent. Under a budget eps
(`--budgets`), a stretch counts only where the winner beats every class c by
eps * |u_y - u_c|, which holds for any embedding within eps of z(phi).

Writes `<input stem>__CERTIFY_<model_tag>.metrics.json` per model: zero-shot accuracy,
and per budget, edit family and edit the mean certified extent (over correctly
classified images; never flipping counts 1), the share certified on all of [0, 1],
certified accuracy at extents 0.1 ... 1.0, the classes images flip to most and the
distribution of the number of intervals, with 95% bootstrap intervals over images.
`--dump-intervals PATH` writes one JSON line per (image, edit, budget) with every
interval and the dataset images nearest to the embedding just past the first boundary.

Under torchrun or srun the ranks share each model's images and prompts (rank 0 certifies
and writes), or take whole models with --shard-models; no other change:
    torchrun --standalone --nproc-per-node 8 run_semantic_certification.py --input FOLDER

Input: a JSONL with `image_path` and `label` (build_base_jsonl.py --labels makes one from
COCO; records whose label is null are skipped and counted) or an image folder with one
subfolder per class (Imagenette, Food-101 and ImageNet exports). Image and prompt
embeddings go through the embedding cache the other scripts share.
"""
import gzip
import json
import os

import numpy as np

from lgip.cli import nonnegative_float, positive_int
from lgip.engine import EvalSettings
from lgip.engine.embed import embed_images, embed_texts
from lgip.engine.distributed import Dist
from lgip.engine.run import run_config, split_models
from lgip.io import atomic_output, file_sha256, is_stream, refuse_inputs
from lgip.labelled import (DEFAULT_EDITS, DEFAULT_TEMPLATE, fill_template, read_edits, read_labelled, read_templates,
                           report_unreadable_images)
from lgip.models import load_model, parse_specs
from lgip.models.device import resolve_device
from lgip.probes.certify import EXTENT_LEVELS, TRANSFORMS, certify, transform_embeddings
from lgip.probes.certify_summary import (certified_accuracy, interval_count_distribution, mean_certified_extent,
                                         share_fully_certified, top_flip_classes)
from lgip.probes.zeroshot import class_embeddings
from lgip.stats import MIN_RECORDS_FOR_INTERVAL, Bootstrap
from lgip_common import (PAPER_MODELS, check_run_outputs, default_workers, evaluation_arguments, launch,
                         print_metrics, run_cli, write_metric_file)

_DIR = os.path.dirname(os.path.abspath(__file__))
JSONL_PATH = os.path.join(_DIR, "lgip_coco_native5_train2017.jsonl")  # build_base_jsonl.py --labels
MODELS = list(PAPER_MODELS)
DEVICE = "auto"
PRECISION = "fp32"
BATCH_SIZE = 32
TEXT_BATCH_SIZE = 256
WORKERS = default_workers()
BOOTSTRAP = 1000
SEED = 0
TEMPLATES = [DEFAULT_TEMPLATE]
EDITS = DEFAULT_EDITS  # lgip/probes/default_edits.json: 7 families x 5 edits for everyday objects
TRANSFORM = "rotate"
BUDGETS = [0.0, 0.01, 0.02, 0.05]
NEAREST = 3  # dataset images listed past the first boundary in --dump-intervals
PAST_BOUNDARY = 1e-3  # how far past the first boundary the nearest images are looked up
TOP_FLIPS = 5
HEADLINE = ["zero_shot_accuracy"]


def parse_args():
    parser = evaluation_arguments(__doc__, globals(), input_help="labelled JSONL (image_path, label) or an image "
                                  "folder with one subfolder per class", pairs=False)
    parser.add_argument("--classnames", default=None, metavar="FILE",
                        help="class names, one per line, in this order (default: the labels found); names no image "
                             "carries are extra competitors")
    parser.add_argument("--templates", nargs="+", default=TEMPLATES, metavar="TEMPLATE",
                        help="class-prompt templates with {} for the class name, or files of them (several: their "
                             "embeddings are averaged, as CLIP's ensembles) (default: %(default)s)")
    parser.add_argument("--edits", default=EDITS, metavar="FILE",
                        help="edit families: JSON object family -> list of templates with {} (default: %(default)s)")
    parser.add_argument("--transform", choices=TRANSFORMS, default=TRANSFORM,
                        help="how an extent moves the embedding: rotate (the in-plane part of the image embedding "
                             "turned from the source prompt toward the edited one), slerp (the embedding itself along "
                             "the great circle to the edited prompt), lerp (straight line, then normalised) "
                             "(default: %(default)s)")
    parser.add_argument("--budgets", nargs="+", type=nonnegative_float, default=BUDGETS, metavar="EPS",
                        help="misalignment budgets on the embedding (default: %(default)s)")
    parser.add_argument("--nearest", type=positive_int, default=NEAREST,
                        help="dataset images listed past each first boundary in --dump-intervals (default: %(default)s)")
    parser.add_argument("--dump-intervals", default=None, metavar="PATH",
                        help="write one JSON line per (image, edit, budget) with its intervals (gzip when PATH ends "
                             "in .gz); with several models, one file each, the model's tag before the extension")
    return parser.parse_args()


def interval_dump_paths(path, tags):
    """{tag: where --dump-intervals PATH goes for each model}: PATH itself for one model
    (or a stream such as /dev/stdout); with several, the tag before the extension
    (`run.jsonl.gz` -> `run.<tag>.jsonl.gz`), so no model's dump replaces another's."""
    if len(tags) == 1 or is_stream(path):
        return {tag: path for tag in tags}
    folder, name = os.path.split(path)
    stem, dot, extensions = name.partition(".")
    return {tag: os.path.join(folder, f"{stem}.{tag}{dot}{extensions}") for tag in tags}


def take(images, indices):
    """The labelled images at `indices`, the class names unchanged."""
    return images._replace(image_paths=[images.image_paths[i] for i in indices],
                           labels=[images.labels[i] for i in indices], sources=[images.sources[i] for i in indices])


def edit_prompts(edits, classnames):
    """(family of each edit, edit templates, [E * C] prompts: edit-major, classes in order)."""
    families = [family for family, templates in edits.items() for _ in templates]
    templates = [template for group in edits.values() for template in group]
    return families, templates, [fill_template(template, name) for template in templates for name in classnames]


def summary(extent, flip_class, n_intervals, correct, classnames):
    """The numbers of one group of (image, edit) columns; the flip classes are counted
    over every image, correctly classified or not."""
    return {
        "mean_certified_extent": mean_certified_extent(extent, correct),
        "share_fully_certified": share_fully_certified(extent, correct),
        "certified_accuracy": {f"{level:g}": value for level, value in certified_accuracy(extent, correct).items()},
        "top_flip_classes": [{"class": name, "count": count}
                             for name, count in top_flip_classes(flip_class, classnames, TOP_FLIPS)],
        "num_intervals": {str(count): share for count, share in interval_count_distribution(n_intervals).items()},
    }


def certification_metrics(result, correct, families, templates, classnames, bootstrap, prefix):
    """Overall, per family and per edit numbers of one budget, with bootstrap intervals
    of the mean certified extent and of certified accuracy at each level."""
    num_images = len(correct)
    image_of = np.repeat(np.arange(num_images)[:, None], len(templates), axis=1)
    groups = {prefix: np.arange(len(templates))}  # the interval names follow the metric file's keys
    groups.update({f"{prefix}.families.{family}": np.array([e for e, f in enumerate(families) if f == family])
                   for family in dict.fromkeys(families)})
    out = {"families": {}}
    for name, columns in groups.items():
        extent, records = result.extent[:, columns], image_of[:, columns]
        entry = summary(extent, result.flip_class[:, columns], result.n_intervals[:, columns], correct, classnames)
        is_correct = np.repeat(correct[:, None], len(columns), axis=1)
        bootstrap.add(f"{name}.mean_certified_extent", extent[is_correct], records[is_correct])
        for level in EXTENT_LEVELS:
            bootstrap.add(f"{name}.certified_accuracy.{level:g}", (is_correct & (extent >= level)).ravel(),
                          records.ravel())
        if name == prefix:
            out.update(entry)
        else:
            family = name.rsplit(".families.", 1)[1]
            entry["edits"] = {templates[e]: summary(result.extent[:, [e]], result.flip_class[:, [e]],
                                                    result.n_intervals[:, [e]], correct, classnames) for e in columns}
            out["families"][family] = entry
    return out


def nearest_past_boundary(result, image_embeddings, sources, targets, transform, nearest):
    """{(image, edit): [(dataset image, similarity)]} for every (image, edit) with more
    than one interval: the images nearest to the embedding just past the first boundary
    (the image itself left out)."""
    images, edits = np.nonzero(result.n_intervals > 1)
    if not len(images):
        return {}
    first_end = result.ends[result.offsets[edits * result.n_images + images]]
    predicted = result.predicted[images]
    moved = transform_embeddings(image_embeddings[images], sources[predicted], targets[edits, predicted],
                                 np.minimum(1.0, first_end + PAST_BOUNDARY), transform)
    similarity = moved @ image_embeddings.T
    similarity[np.arange(len(images)), images] = -np.inf
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :nearest]
    return {(int(i), int(e)): [(int(j), float(similarity[k, j])) for j in order[k]]
            for k, (i, e) in enumerate(zip(images, edits))}


def write_interval_dump(path, images, results, families, templates, classnames, nearest_by_budget):
    """One JSON line per (image, edit, budget), atomically (gzip when the name ends in .gz)."""
    with atomic_output(path, "wb") as raw:
        handle = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.endswith(".gz") else raw
        for result in results:
            nearest = nearest_by_budget[result.budget]
            for image in range(result.n_images):
                for edit, template in enumerate(templates):
                    row = {"image_path": images.sources[image].image_path, "label": classnames[images.labels[image]],
                           "predicted": classnames[result.predicted[image]], "family": families[edit],
                           "edit": template, "budget": result.budget,
                           "intervals": [[start, end, None if cls is None else classnames[cls]]
                                         for start, end, cls in result.intervals(image, edit)],
                           "nearest_past_boundary": [
                               {"image_path": images.sources[j].image_path, "label": classnames[images.labels[j]],
                                "similarity": similarity} for j, similarity in nearest.get((image, edit), [])]}
                    handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        if handle is not raw:
            handle.close()


def certify_model(args, settings, spec, images, templates, edits, device, input_sha256, timings, dist: Dist,
                  world_size: int):
    """One model's metric dict (and, with --dump-intervals, its rows). Under several
    ranks (`dist`) they share the encoding and the main rank alone certifies; the
    others get (None, None). `world_size` is the launch's, for the config."""
    import time

    started = time.perf_counter()
    model = load_model(spec, device, settings.precision, siglip_padding=settings.siglip_padding,
                       prefix_sharing=settings.prefix_sharing, progress=settings.progress)
    timings["load_model"] = time.perf_counter() - started
    started = time.perf_counter()
    image_embeddings, failures = embed_images(model, images.image_paths, settings, dist)
    timings["images"] = time.perf_counter() - started
    started = time.perf_counter()
    classes = class_embeddings(model, images.classnames, templates, settings, dist)
    families, edit_templates, prompts = edit_prompts(edits, images.classnames)
    targets = embed_texts(model, prompts, settings, dist)
    timings["texts"] = time.perf_counter() - started
    if not dist.is_main:
        return None, None
    targets = targets.reshape(len(edit_templates), len(images.classnames), -1)
    report_unreadable_images(images.sources, images.image_paths, failures, settings.strict)
    keep = np.setdiff1d(np.arange(len(images.image_paths)), list(failures))
    kept = take(images, keep)
    started = time.perf_counter()
    embeddings = image_embeddings[keep]
    results = certify(embeddings, classes, targets, transform=args.transform, budgets=args.budgets)
    correct = results[0].predicted == np.asarray(kept.labels)
    bootstrap = Bootstrap(len(keep), settings.bootstrap, settings.seed, MIN_RECORDS_FOR_INTERVAL)
    bootstrap.add("zero_shot_accuracy", correct, np.arange(len(keep)))
    metrics = {"model_tag": model.spec.tag, "num_samples": int(len(keep)), "num_skipped_images": len(failures),
               "num_classes": len(images.classnames), "zero_shot_accuracy": float(correct.mean()),
               "transform": args.transform, "templates": templates, "budgets": list(args.budgets),
               "by_budget": {f"{result.budget:g}": certification_metrics(result, correct, families, edit_templates,
                                                                         images.classnames, bootstrap,
                                                                         f"by_budget.{result.budget:g}")
                             for result in results}}
    metrics["ci95"] = bootstrap.intervals()
    timings["certify"] = time.perf_counter() - started
    nearest = ({result.budget: nearest_past_boundary(result, embeddings, classes, targets, args.transform, args.nearest)
                for result in results} if args.dump_intervals else None)
    config = run_config(settings, model, args.input, input_sha256, timings, "run_semantic_certification.py",
                        world_size)
    config["edits_file"] = os.path.abspath(args.edits)
    metrics["config"] = config
    return metrics, (kept, results, families, edit_templates, nearest)


def write_outputs(args, metrics, dumped, dumps, outputs, classnames):
    """Print one model's headline numbers, write its metric file and its interval dump."""
    print_metrics(metrics, HEADLINE)
    for budget, by_budget in metrics["by_budget"].items():
        print(f"  budget {budget}: mean certified extent {by_budget['mean_certified_extent']}, "
              f"certified on all of [0, 1] {by_budget['share_fully_certified']}")
    write_metric_file(outputs.per_model_path(metrics["model_tag"]), metrics)
    if args.dump_intervals:
        dump_path = dumps[metrics["model_tag"]]
        kept, results, families, edit_templates, nearest = dumped
        write_interval_dump(dump_path, kept, results, families, edit_templates, classnames, nearest)
        print(f"wrote {dump_path}")


def main():
    args = parse_args()
    tags = [spec.tag for spec in parse_specs(args.models)]  # a typo fails before any work
    dumps = interval_dump_paths(args.dump_intervals, tags) if args.dump_intervals else {}
    outputs = check_run_outputs(args, per_model="__CERTIFY_{tag}.metrics.json",
                                extra=[("--dump-intervals", path) for path in dict.fromkeys(dumps.values())])
    images = read_labelled(args.input, args.classnames, min_classes=2)
    for path in dict.fromkeys(dumps.values()):
        refuse_inputs(path, images.image_paths, "--dump-intervals")
    if args.limit is not None:
        images = take(images, range(min(args.limit, len(images.image_paths))))
    templates = read_templates(args.templates)
    edits = read_edits(args.edits)
    input_sha256 = file_sha256(args.input) if os.path.isfile(args.input) else None
    with launch(args) as dist:
        settings = EvalSettings.from_args(args)  # this rank's device and workers
        device = resolve_device(settings.device)
        specs, model_dist = split_models(outputs.specs, dist, args.shard_models, settings.seed)
        for spec in specs:
            metrics, dumped = certify_model(args, settings, spec, images, templates, edits, device, input_sha256, {},
                                            model_dist, dist.world_size)
            if metrics is not None:
                write_outputs(args, metrics, dumped, dumps, outputs, images.classnames)
        dist.wait_for_all()  # under --shard-models the slowest rank's models may take long


if __name__ == "__main__":
    run_cli(main)
