"""Labelled images x models -> zero-shot against systematic accuracy: can any image be
given another class's embedding while looking unchanged, and does Gaussian pixel noise
give the modified images away?

After Salman, Shams, Liu and Zhu, "Intriguing Differences Between Zero-Shot and
Systematic Evaluations of Vision-Language Transformer Models" (arXiv:2402.08473). For up
to --sources-per-class images of each class (seeded), and for each of them a target
image from every other class, gradient descent on the source's pixels until the image
tower's raw output matches the target image's (mean squared error; many pairs per
forward/backward, --pair-batch-size at a time). Then the matched image's zero-shot class
(prompts from --templates) against the source's, how much its pixels changed, and, for
matched and natural images alike, how their embeddings and labels react to N(0, s^2)
pixel noise at each s of --noise-sigmas (--noise-draws copies, both 8-bit quantised)
and how well that separates them (ROC AUC, TPR at 5% FPR). --seed fixes the pairs, each
image's noise draws and the bootstrap.

Input (--input): a JSONL with `image_path` and `label` per record (build_base_jsonl.py
--labels writes one from COCO; a record whose label is null is skipped) or an image
folder with one subfolder per class. --classnames FILE fixes the classes and their
order (one per line); the prompts use the class names as they are written.

Defaults are the authors' procedure: raw features, MSE, plain descent with a fixed step
on the model-normalised tensor, clamped to its global minimum and maximum, stopping
when the squared distance is below --loss-threshold and the cosine above
--cos-threshold, or after --steps. Ours beside it: --optimizer adam, --box pixel01
(descend on [0, 1] pixels, the normalisation inside the graph), --eps-linf (a bound on
the change, in the box's units), --normalize-features.

Writes `<input stem>__MATCHING_<model_tag>.metrics.json` per model (zero_shot_accuracy,
systematic_accuracy, target_rate, num_pairs, perturbation, detection, confusion, descent,
95% bootstrap intervals over source images, config) and `..._ALL.metrics.json`; beside
them PNGs: `.example_<k>.png` for the first --examples pairs (original, matched image
and their difference amplified, captioned with zero-shot classes and probabilities), `.detection_auc.png` (AUC against sigma) and with
--jacobian N `.jacobian.png` (singular values of the image tower's Jacobian at the
original and at the matched image, as the paper's Figure 3). Finished pairs go to a
checkpoint folder beside the outputs as they finish: a run killed mid-way, started
again with the same flags, skips them and writes the same metric file (the folder is
removed once the metric file is written, unless --keep-checkpoint).

Under torchrun or srun the ranks share each model's pairs (rank 0 computes the metrics
and writes), or take whole models with --shard-models; no other change:
    torchrun --standalone --nproc-per-node 8 run_embedding_matching.py --input FOLDER
    python run_embedding_matching.py --merge-only   # rebuild _ALL from the per-model files
"""
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List

import numpy as np

from lgip.cli import nonnegative_float, nonnegative_int, positive_float, positive_int
from lgip.figures import detection_auc
from lgip.io import InputError, file_sha256
from lgip.labelled import DEFAULT_TEMPLATE, read_labelled, read_templates, report_unreadable_images
from lgip.stats import mean_or_none
from lgip_common import (PAPER_MODELS, check_run_outputs, default_workers, evaluation_arguments, gather_models, launch,
                         merge_model_files, print_metrics, run_cli, write_metric_file)

_DIR = os.path.dirname(os.path.abspath(__file__))
SCRIPT = "run_embedding_matching.py"
JSONL_PATH = os.path.join(_DIR, "imagenette2-320", "val")  # labelled JSONL or image folder: Imagenette, the paper's
CLASSNAMES_FILE = None  # one class per line; default: the labels found, sorted
TEMPLATES = [DEFAULT_TEMPLATE]
MODELS = list(PAPER_MODELS)
SOURCES_PER_CLASS = 2
STEPS = 15000  # the authors' cap
LR = 1.0  # the authors' scripts use 0.08 to 5 (plain descent on the normalised tensor)
OPTIMIZER = "sgd"
BOX = "normalized"
EPS_LINF = None  # no bound, as the authors
NORMALIZE_FEATURES = False
LOSS_THRESHOLD = 1e-4  # squared L2 distance of raw features
COS_THRESHOLD = 0.97
NOISE_SIGMAS = [0.005, 0.01, 0.02, 0.04, 0.08]  # in [0, 1] pixels
NOISE_DRAWS = 16
PAIR_BATCH_SIZE = 64  # pairs per forward/backward; memory follows it
JACOBIAN = 0  # images whose Jacobian spectrum is computed (D backward passes each)
JACOBIAN_SIGMA = 1e-3  # noise for the linear-approximation check, in [0, 1] pixels
JACOBIAN_DRAWS = 256
EXAMPLES = 4  # PNGs of the first pairs
CHECKPOINT_SECONDS = 60.0  # finished pairs are written at most this often
DEVICE = "auto"
PRECISION = "fp32"
BATCH_SIZE = 32  # images per batch when decoding and for the zero-shot pass
TEXT_BATCH_SIZE = 256
WORKERS = default_workers()
BOOTSTRAP = 1000  # resamples of source images for the 95% intervals
SEED = 0  # --seed fixes the pairs, each image's noise draws and the bootstrap
HEADLINE = ["zero_shot_accuracy", "systematic_accuracy", "target_rate", "perturbation.linf_mean",
            "perturbation.psnr_mean", "descent.converged_share"]


def parse_args(argv=None):
    parser = evaluation_arguments(__doc__, globals(), pairs=False,
                                  input_help="labelled JSONL (image_path, label) or image folder with a subfolder per class")
    parser.add_argument("--classnames", default=CLASSNAMES_FILE, metavar="FILE",
                        help="class names, one per line, in the order to use (default: the labels found, sorted)")
    parser.add_argument("--templates", nargs="+", default=TEMPLATES, metavar="TEMPLATE",
                        help="prompt templates with {} for the class name, or files of them (default: %(default)s)")
    parser.add_argument("--sources-per-class", type=positive_int, default=SOURCES_PER_CLASS, metavar="K",
                        help="source images per class; each is matched to one image of every other class "
                             "(default: %(default)s)")
    parser.add_argument("--steps", type=nonnegative_int, default=STEPS, help="step cap per pair (default: %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=LR, help="step size (default: %(default)s)")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default=OPTIMIZER,
                        help="sgd: the authors' fixed step; adam (default: %(default)s)")
    parser.add_argument("--box", choices=["normalized", "pixel01"], default=BOX,
                        help="normalized: descend on the model-normalised tensor, clamped to its global min and max "
                             "(the authors'); pixel01: on [0, 1] pixels (default: %(default)s)")
    parser.add_argument("--eps-linf", type=positive_float, default=EPS_LINF,
                        help="bound on each element's change, in the box's units (pixels for pixel01)")
    parser.add_argument("--normalize-features", action="store_true", default=NORMALIZE_FEATURES,
                        help="match L2-normalised features instead of raw ones")
    parser.add_argument("--loss-threshold", type=positive_float, default=LOSS_THRESHOLD,
                        help="a pair stops once its squared feature distance is below this and ... "
                             "(default: %(default)s)")
    parser.add_argument("--cos-threshold", type=nonnegative_float, default=COS_THRESHOLD,
                        help="... its cosine similarity is above this (default: %(default)s)")
    parser.add_argument("--noise-sigmas", type=nonnegative_float, nargs="+", default=NOISE_SIGMAS, metavar="S",
                        help="noise standard deviations in [0, 1] pixels (default: %(default)s)")
    parser.add_argument("--noise-draws", type=positive_int, default=NOISE_DRAWS, metavar="M",
                        help="noisy copies per image and sigma (default: %(default)s)")
    parser.add_argument("--pair-batch-size", type=positive_int, default=PAIR_BATCH_SIZE,
                        help="pairs per forward/backward (default: %(default)s)")
    parser.add_argument("--jacobian", type=nonnegative_int, default=JACOBIAN, metavar="N",
                        help="Jacobian singular values at the first N pairs' original and matched images, and a "
                             "check of the linear approximation (default: %(default)s)")
    parser.add_argument("--examples", type=nonnegative_int, default=EXAMPLES, metavar="N",
                        help="PNGs of the first N pairs (default: %(default)s)")
    parser.add_argument("--checkpoint-seconds", type=nonnegative_float, default=CHECKPOINT_SECONDS,
                        help="write finished pairs at most this often (default: %(default)s)")
    parser.add_argument("--keep-checkpoint", action="store_true",
                        help="keep the checkpoint folder after the metric file is written")
    parser.add_argument("--merge-only", action="store_true",
                        help="only write the _ALL file from the per-model files already there (after a "
                             "--shard-models run that was stopped)")
    args = parser.parse_args(argv)
    args.input = args.input.rstrip("/\\") or args.input
    if args.seed < 0:
        raise InputError(f"--seed {args.seed}: expected 0 or more")
    return args


@dataclass
class LabelledRun:
    """What every model's metrics are computed from besides its own numbers: the images
    (where each came from, for messages), their classes, the input's digest, the pairs,
    the source images and each pair's source numbered 0.. (the bootstrap's records), the
    matching options and the templates."""
    paths: List[str]
    places: List[str]
    labels: np.ndarray
    classnames: List[str]
    num_unlabelled: int
    input_sha256: str
    pairs: Any
    source_images: np.ndarray
    source_record: np.ndarray
    options: Any
    templates: List[str]


@dataclass
class ZeroShot:
    """A model's zero-shot classes of every image (-1 where unreadable) and its unit
    class embeddings [C, D]."""
    prediction: np.ndarray
    readable: np.ndarray
    classes: np.ndarray


def zero_shot(model, run: LabelledRun, settings, dist) -> ZeroShot:
    """Zero-shot classes of every image, through the embedding cache; an unreadable
    image is a warning (an error with --strict) and counts for nothing. Under several
    ranks they share the encoding; every rank gets the class embeddings and which images
    are readable, the main rank alone the predictions (-1 elsewhere)."""
    from lgip.engine.embed import embed_images
    from lgip.probes.zeroshot import class_embeddings, predict

    classes = dist.broadcast_rows(class_embeddings(model, run.classnames, run.templates, settings, dist))
    embeddings, failures = embed_images(model, run.paths, settings, dist)
    readable = np.ones(len(run.paths), dtype=bool)
    readable[list(failures)] = False
    readable = dist.broadcast_mask(readable, len(run.paths))
    prediction = np.full(len(run.paths), -1, dtype=np.int64)
    if not dist.is_main:
        return ZeroShot(prediction, readable, classes)
    report_unreadable_images(run.places, run.paths, failures, settings.strict)
    prediction[readable] = predict(embeddings[readable], classes)
    return ZeroShot(prediction, readable, classes)


def pair_pixels(model, run: LabelledRun, readable, settings):
    """(source pixels [U, 3, H, W] in [0, 1], one row per source image, and each pair's
    target features [P, D]), decoded with the model's resize and crop. An image a pair
    needs that cannot be read is an error."""
    import torch

    from lgip.engine.pixels import load_pixels
    from lgip.probes.systematic import raw_features

    pairs = run.pairs
    used = np.unique(np.concatenate([pairs.source, pairs.target]))
    pixels, failures = load_pixels(model, [run.paths[i] for i in used], settings)
    failed = sorted([int(used[row]) for row in failures] + [int(i) for i in used if not readable[i]])
    if failed:
        raise InputError(f"{run.places[failed[0]]}: image {run.paths[failed[0]]} was chosen for a pair but "
                         f"could not be read; remove it from the input")
    source_pixels = pixels[torch.as_tensor(np.searchsorted(used, run.source_images))]
    target_features = raw_features(model, pixels[torch.as_tensor(np.searchsorted(used, pairs.target))],
                                   run.options.pair_batch_size)
    return source_pixels, target_features


def open_checkpoint(model, run: LabelledRun, prefix: str, flush_seconds: float, dist):
    """The checkpoint of this model's pairs, keyed by everything that decides a pair's
    record: the model and its settings, the device type, the matching options, the
    classes and templates, the pairs, and the pair images' files (path, size, mtime).
    Under several ranks each writes shards of its own."""
    from lgip.engine.cache import image_key
    from lgip.engine.checkpoint import RunCheckpoint, checkpoint_folder

    pairs = run.pairs
    used = np.unique(np.concatenate([pairs.source, pairs.target]))
    digest = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    settings = {"script": SCRIPT, "spec": model.spec.spec, "model_settings": model.settings(),
                "device_type": model.device_type, "options": run.options.as_dict(),
                "classnames": run.classnames, "templates": run.templates,
                "pairs": digest(f"{pairs.source.tolist()}|{pairs.target.tolist()}"),
                "images": digest("".join(image_key(run.paths[i]) for i in used))}
    folder, keyed = checkpoint_folder(prefix, settings)
    return RunCheckpoint(folder, keyed if dist.is_main else None, flush_seconds, dist.writer)


def matching_metrics(run: LabelledRun, zero: ZeroShot, records, natural, bootstrap) -> Dict[str, Any]:
    """The metric dict from the zero-shot classes, every pair's record and the natural
    images' noise statistics; pair metrics' intervals are registered with `bootstrap`
    (over source images)."""
    from lgip.probes.matching import detection_report

    pairs, labels, classnames = run.pairs, run.labels, run.classnames
    source_label = labels[pairs.source]
    source_correct = zero.prediction[pairs.source] == source_label
    target_prediction = zero.prediction[pairs.target]
    prediction = records.field("prediction").astype(np.int64)
    prediction_8bit = records.field("prediction_8bit").astype(np.int64)
    systematic = prediction[source_correct] == source_label[source_correct]
    on_target = prediction == target_prediction
    linf, l2, psnr = records.field("linf"), records.field("l2"), records.field("psnr")
    changed = np.isfinite(psnr)  # PSNR is infinite where nothing changed
    steps, converged = records.field("steps"), records.field("converged") > 0
    owner = run.source_record
    bootstrap.add("systematic_accuracy", systematic, owner[source_correct])
    bootstrap.add("target_rate", on_target, owner)
    bootstrap.add("perturbation.linf_mean", linf, owner)
    bootstrap.add("perturbation.l2_mean", l2, owner)
    bootstrap.add("perturbation.psnr_mean", psnr[changed], owner[changed])
    bootstrap.add("descent.converged_share", converged, owner)
    detection = detection_report({"embedding_shift": records.shift, "label_agreement": records.agreement}, natural,
                                 run.options.noise_sigmas)
    detection.update({"num_matched": len(pairs), "num_natural": int(natural["embedding_shift"].shape[1])})
    confusion = np.zeros((len(classnames), len(classnames)), dtype=np.int64)
    np.add.at(confusion, (source_label, prediction), 1)
    correct_images = zero.prediction[zero.readable] == labels[zero.readable]
    return {
        "num_samples": int(zero.readable.sum()),
        "zero_shot_accuracy": mean_or_none(correct_images),  # over every readable image
        "systematic_accuracy": mean_or_none(systematic),  # over pairs whose source is zero-shot correct
        "target_rate": mean_or_none(on_target),  # over all pairs: the matched image gets the target image's class
        "num_pairs": len(pairs),
        "num_pairs_source_correct": int(source_correct.sum()),
        "after_8bit_quantization": {  # the matched image saved as an 8-bit file and read back
            "systematic_accuracy": mean_or_none(prediction_8bit[source_correct] == source_label[source_correct]),
            "target_rate": mean_or_none(prediction_8bit == target_prediction)},
        "perturbation": {"linf_max": float(linf.max()), "linf_mean": mean_or_none(linf), "l2_mean": mean_or_none(l2),
                         "psnr_mean": mean_or_none(psnr[changed]), "unchanged_pairs": int((~changed).sum()),
                         "units": "[0, 1] pixels; PSNR in dB"},
        "descent": {"steps_mean": mean_or_none(steps), "steps_median": float(np.median(steps)),
                    "steps_max": int(steps.max()), "converged_share": mean_or_none(converged),
                    "distance_mean": mean_or_none(records.field("distance")),
                    "cosine_mean": mean_or_none(records.field("cosine"))},
        "detection": detection,
        "confusion": {"rows": "source class", "columns": "matched image's zero-shot class", "classnames": classnames,
                      "matrix": confusion.tolist()},
        "counts": {"images": len(labels), "images_readable": int(zero.readable.sum()),
                   "images_unlabelled_skipped": run.num_unlabelled, "classes": len(classnames),
                   "source_images": len(run.source_images), "target_images": int(len(np.unique(pairs.target))),
                   "pairs": len(pairs), "pairs_converged": int(converged.sum())},
    }


def example_figures(model, run: LabelledRun, zero: ZeroShot, runner, originals, matched, prefix: str) -> None:
    """One PNG per kept pair: original and matched image (as an 8-bit file holds it)
    and their difference, captioned with zero-shot classes and probabilities (softmax
    over logit_scale x cosine)."""
    import torch

    from lgip.figures import example_pair
    from lgip.probes.matching import quantize_pixels
    from lgip.probes.systematic import class_probabilities, unit

    classes = torch.from_numpy(zero.classes).to(model.device)
    with torch.no_grad():
        original_p = class_probabilities(unit(runner.pixel_features(originals.to(model.device))), classes,
                                         model.logit_scale()).cpu()
        matched_p = class_probabilities(unit(runner.box_features(matched.to(model.device))), classes,
                                        model.logit_scale()).cpu()
        matched01 = runner.path.to_pixels01(matched.to(model.device)).cpu()
    names, pairs, labels = run.classnames, run.pairs, run.labels
    for k in range(len(matched)):
        source_class, target_class = names[labels[pairs.source[k]]], names[labels[pairs.target[k]]]
        before, after = int(original_p[k].argmax()), int(matched_p[k].argmax())
        example_pair(f"{prefix}.example_{k}.png", originals[k], quantize_pixels(matched01[k]),
                     original_caption=f"original ({source_class})\nzero-shot: {names[before]} "
                                      f"p={float(original_p[k, before]):.2f}",
                     matched_caption=f"matched to a {target_class} image\nzero-shot: {names[after]} "
                                     f"p={float(matched_p[k, after]):.2f}",
                     title=f"pair {k}: {source_class} -> {target_class}")


def jacobian_block(model, runner, originals, matched, prefix: str, seed: int) -> Dict[str, Any]:
    """Singular values of the image tower's Jacobian (with respect to [0, 1] pixels) at
    the originals and at the matched images, plotted, and the linear approximation's
    check at JACOBIAN_SIGMA on the originals."""
    import torch

    from lgip.figures import jacobian_spectra
    from lgip.probes.matching import jacobian_singular_values, linear_approximation_check

    features = lambda pixels: model.image_features(pixels, grad=True)  # noqa: E731
    # torch.func takes its own gradients inside; outside it nothing needs a graph back
    # to the model's parameters.
    with torch.no_grad():
        originals = originals.to(model.device)
        matched01 = runner.path.to_pixels01(matched.to(model.device))
        at_original = jacobian_singular_values(features, originals)
        at_matched = jacobian_singular_values(features, matched01)
        errors = linear_approximation_check(features, originals, JACOBIAN_SIGMA, JACOBIAN_DRAWS,
                                            generator=torch.Generator().manual_seed(seed),
                                            batch_size=runner.options.pair_batch_size)
    jacobian_spectra(f"{prefix}.jacobian.png", at_original.numpy(), at_matched.numpy())
    return {"pairs": len(originals), "singular_values_original": at_original.tolist(),
            "singular_values_matched": at_matched.tolist(),
            "linear_check": {"sigma": JACOBIAN_SIGMA, "draws": JACOBIAN_DRAWS, "relative_error": errors.tolist(),
                             # what sampling alone leaves: about sqrt(D / draws)
                             "sampling_error_scale": float(np.sqrt(at_original.shape[1] / JACOBIAN_DRAWS))}}


def gather_pairs(checkpoint, kind: str, mine: List[int], ids: List[int], dist):
    """Rows of `kind` for the pairs `ids` on the main rank, NaN where none was written:
    what its checkpoint holds (earlier runs' pairs and its own), and what the other ranks
    wrote for their pairs `mine` in this run, sent as tensors (a folder of one machine's
    disk is all a rank needs); None on the other ranks."""
    if dist.is_main:
        held = checkpoint.load(kind, ids)[1]
        return dist.gather_rows(np.zeros((0, 0), np.float32), [], len(ids), out=held) if dist.distributed else held
    _, rows = checkpoint.load(kind, mine) if mine else (None, None)
    place = {pair: row for row, pair in enumerate(ids)}
    return dist.gather_rows(rows if rows is not None else np.zeros((0, 0), np.float32), [place[i] for i in mine],
                            len(ids))


def match_model(spec, args, settings, run: LabelledRun, device: str, base: str, read_seconds: float, dist,
                world_size: int):
    """One model's metric dict and checkpoint: load it, check that its image tower gives
    gradients, zero-shot on every image, descend every pair the checkpoint lacks, noise
    on the natural images, metrics, figures. Under several ranks (`dist`) they share the
    zero-shot encoding and the pairs, and only the main rank gets the dict (None on the
    others). `world_size` is the launch's, for the config."""
    import torch

    from lgip.engine.run import run_config
    from lgip.models import load_model
    from lgip.probes import systematic
    from lgip.stats import Bootstrap

    timings = {"read_input": read_seconds}
    started = time.perf_counter()
    model = load_model(spec, device, settings.precision, siglip_padding=settings.siglip_padding,
                       prefix_sharing=settings.prefix_sharing)
    systematic.require_image_gradients(model)
    timings["load_model"] = time.perf_counter() - started

    started = time.perf_counter()
    zero = zero_shot(model, run, settings, dist)
    timings["zero_shot"] = time.perf_counter() - started
    started = time.perf_counter()
    source_pixels, target_features = pair_pixels(model, run, zero.readable, settings)
    timings["pixels"] = time.perf_counter() - started

    started = time.perf_counter()
    prefix = f"{base}__MATCHING_{model.spec.tag}"
    checkpoint = open_checkpoint(model, run, prefix, args.checkpoint_seconds, dist)
    num_pairs, num_sigmas = len(run.pairs), len(run.options.noise_sigmas)
    keep = list(range(min(num_pairs, max(args.examples, args.jacobian))))  # pairs whose tensors the figures need
    found = systematic.load_records(checkpoint, num_pairs, num_sigmas)[0] if dist.is_main else None
    kept = checkpoint.load(systematic.TENSORS, keep)[0] if dist.is_main else None
    found, kept = dist.broadcast_mask(found, num_pairs), dist.broadcast_mask(kept, len(keep))  # one todo list for all
    todo = sorted(set(np.flatnonzero(~found).tolist()) | {keep[i] for i in np.flatnonzero(~kept)})
    if len(todo) < num_pairs and dist.is_main:
        print(f"resuming: {num_pairs - len(todo)} of {num_pairs} pairs already finished in {checkpoint.folder}")
    classes = torch.from_numpy(zero.classes)
    runner = systematic.PairRunner(model, run.options, source_pixels, run.source_record, target_features, classes,
                                   checkpoint, keep, settings.progress and dist.is_main)
    mine = dist.shard(todo)
    runner.run(mine)
    rows = gather_pairs(checkpoint, systematic.RECORDS, mine, list(range(num_pairs)), dist)
    kept_rows = gather_pairs(checkpoint, systematic.TENSORS, sorted(set(mine) & set(keep)), keep, dist)
    if not dist.is_main:
        return None, checkpoint
    missing = int(np.isnan(rows).all(axis=1).sum()) if rows is not None else num_pairs
    if missing:
        raise RuntimeError(f"checkpoint {checkpoint.folder} lacks {missing} pairs after the run")
    records = systematic.PairRecords(rows, num_sigmas)
    timings["matching"] = time.perf_counter() - started

    started = time.perf_counter()
    natural = systematic.natural_statistics(model, source_pixels, run.source_images.tolist(), classes, run.options)
    timings["natural_noise"] = time.perf_counter() - started

    started = time.perf_counter()
    bootstrap = Bootstrap(len(run.source_images), settings.bootstrap, settings.seed)
    metrics = {"model_tag": model.spec.tag, **matching_metrics(run, zero, records, natural, bootstrap)}
    image_bootstrap = Bootstrap(int(zero.readable.sum()), settings.bootstrap, settings.seed)
    correct = zero.prediction[zero.readable] == run.labels[zero.readable]
    image_bootstrap.add("zero_shot_accuracy", correct, np.arange(len(correct)))
    metrics["ci95"] = {**image_bootstrap.intervals(), **bootstrap.intervals()}
    timings["metrics"] = time.perf_counter() - started

    started = time.perf_counter()
    if keep:
        matched = torch.from_numpy(kept_rows).reshape((len(keep),) + tuple(source_pixels.shape[1:]))
        originals = source_pixels[torch.as_tensor(run.source_record[keep])]
        if args.examples:
            example_figures(model, run, zero, runner, originals[:args.examples], matched[:args.examples], prefix)
        if args.jacobian:
            metrics["jacobian"] = jacobian_block(model, runner, originals[:args.jacobian], matched[:args.jacobian],
                                                 prefix, settings.seed)
    detection_auc(f"{prefix}.detection_auc.png", metrics["detection"])
    timings["figures"] = time.perf_counter() - started

    metrics["config"] = run_config(settings, model, args.input, run.input_sha256, timings, SCRIPT, world_size)
    metrics["config"]["matching"] = {**run.options.as_dict(), "sources_per_class": args.sources_per_class,
                                     "classnames_file": args.classnames, "templates": run.templates,
                                     "examples": args.examples, "jacobian": args.jacobian}
    return metrics, checkpoint


def read_input(args) -> LabelledRun:
    """The labelled images, templates and pairs, checked before any model is loaded."""
    from lgip.probes.systematic import MatchingOptions, choose_pairs

    labelled = read_labelled(args.input, args.classnames, min_classes=2)
    templates = read_templates(args.templates)
    count = len(labelled.image_paths) if args.limit is None else min(args.limit, len(labelled.image_paths))
    labels = np.asarray(labelled.labels[:count], dtype=np.int64)
    classnames = labelled.classnames
    if args.classnames is None and count < len(labelled.image_paths):
        # The classes are the labels found: those of the images kept.
        present = np.unique(labels)
        classnames, labels = [classnames[c] for c in present], np.searchsorted(present, labels)
    images = np.bincount(labels, minlength=len(classnames))
    if (images > 0).sum() < 2:
        raise InputError(f"{args.input}: every image is of one class ({classnames[labels[0]]}); "
                         f"matching needs images of at least two classes")
    if (images == 0).any():
        empty = [classnames[c] for c in np.flatnonzero(images == 0)]
        raise InputError(f"{args.classnames or args.input}: {len(empty)} class(es) have no image"
                         f"{'' if args.limit is None else f' among the first {count}'} "
                         f"({', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}), so no pair can target them; "
                         f"leave them out of the class names")
    if os.path.isfile(args.input):
        input_sha256 = file_sha256(args.input)
    else:  # a folder: the digest of its listing
        listing = "".join(f"{source.image_path}\t{classnames[label]}\n" for source, label in zip(labelled.sources, labels))
        input_sha256 = hashlib.sha256(listing.encode("utf-8")).hexdigest()
    options = MatchingOptions(box=args.box, steps=args.steps, lr=args.lr, optimizer=args.optimizer,
                              loss_threshold=args.loss_threshold, cos_threshold=args.cos_threshold,
                              eps_linf=args.eps_linf, normalize_features=args.normalize_features,
                              pair_batch_size=args.pair_batch_size, noise_sigmas=tuple(args.noise_sigmas),
                              noise_draws=args.noise_draws, seed=args.seed)
    pairs = choose_pairs(labels, len(classnames), args.sources_per_class, args.seed)
    source_images = np.unique(pairs.source)
    return LabelledRun(labelled.image_paths[:count], [str(source) for source in labelled.sources[:count]], labels,
                       classnames, labelled.num_unlabelled, input_sha256, pairs, source_images,
                       np.searchsorted(source_images, pairs.source), options, templates)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    outputs = check_run_outputs(args, per_model="__MATCHING_{tag}.metrics.json",
                                combined="__MATCHING_ALL.metrics.json")  # before any work
    run = None if args.merge_only else read_input(args)
    from lgip.engine.run import split_models
    from lgip.engine.settings import EvalSettings
    from lgip.models.device import resolve_device

    with launch(args) as dist:
        if args.merge_only:
            merge_model_files(outputs, dist)
            return
        settings = EvalSettings.from_args(args)  # this rank's device and workers
        device = resolve_device(settings.device)
        read_seconds = time.perf_counter() - started
        classes = len(run.classnames)
        if dist.is_main:
            print(f"{len(run.labels)} images in {classes} classes; {len(run.pairs)} pairs "
                  f"(up to {args.sources_per_class} source(s) per class x {classes - 1} target classes)")
        specs, model_dist = split_models(outputs.specs, dist, args.shard_models, settings.seed)
        all_metrics = []
        for spec in specs:
            metrics, checkpoint = match_model(spec, args, settings, run, device, outputs.base, read_seconds,
                                              model_dist, dist.world_size)
            if metrics is None:
                continue
            print_metrics(metrics, HEADLINE)
            print("  detection, best sigma: " + "; ".join(
                f"{name} AUC {entry['auc']:.3f} at {entry['sigma']:g}, TPR at 5% FPR {entry['tpr_at_fpr']:.3f}"
                for name, entry in metrics["detection"]["best"].items()))
            write_metric_file(outputs.per_model_path(metrics["model_tag"]), metrics)
            if not args.keep_checkpoint:
                checkpoint.remove()
            all_metrics.append(metrics)
        all_metrics = gather_models(args, dist, all_metrics)
        if dist.is_main:
            write_metric_file(outputs.combined_path, all_metrics)


if __name__ == "__main__":
    run_cli(main)
