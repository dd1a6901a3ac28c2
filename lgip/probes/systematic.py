"""Systematic evaluation by embedding matching over a labelled image set: the run around
the maths of lgip/probes/matching.py that run_embedding_matching.py drives.

`choose_pairs` draws (source, target) image pairs from the labels, seeded; `box_path`
says how a model's pixels become the tensor the descent moves and back; `PairRunner`
descends any list of pair ids, many pairs per forward/backward, and as each pair
finishes computes its record (descent, predictions, change in pixels, noise statistics)
and writes it to a `RunCheckpoint`. The descent's and the predictions' forward passes
have one fixed batch shape (`fixed_rows`), and each image's noise statistics are
computed on their own with the image's own seeded generator, so a pair's record depends
on that pair alone: a run killed and resumed, or its pairs split over several
processes, gives the same records to the last bit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from lgip.engine.checkpoint import RunCheckpoint
from lgip.engine.pixels import fixed_rows
from lgip.io import InputError
from lgip.models.base import VisionLanguageModel
from lgip.probes.matching import (DescentStep, invert_normalization, match_embeddings, noise_statistics,
                                  perturbation_sizes)

# The pair's per-item numbers, in this order, then its embedding shift and its label
# agreement at each noise sigma. `prediction` is the matched tensor's zero-shot class,
# `prediction_8bit` the class of the same image saved as 8-bit pixels.
RECORD_FIELDS = ("steps", "converged", "distance", "cosine", "prediction", "prediction_8bit", "linf", "l2", "psnr")
RECORDS, TENSORS = "records", "tensors"  # the checkpoint's two kinds of row
MATCHED_STREAM, NATURAL_STREAM = 1, 2  # noise generators: one stream for matched images, one for natural ones
CHUNK_POOLS = 16  # pairs held in memory at once: this many pools' worth


@dataclass(frozen=True)
class MatchingOptions:
    """What decides a pair's result: the descent's settings (see match_embeddings), the
    pool size (every forward has this many rows), the noise sweep and the seed."""
    box: str = "normalized"
    steps: int = 15000
    lr: float = 0.1
    optimizer: str = "sgd"
    loss_threshold: float = 1e-4
    cos_threshold: float = 0.97
    eps_linf: Optional[float] = None
    normalize_features: bool = False
    pair_batch_size: int = 64
    noise_sigmas: Tuple[float, ...] = (0.01, 0.02, 0.04, 0.08)
    noise_draws: int = 8
    seed: int = 0

    def as_dict(self) -> dict:
        return {**asdict(self), "noise_sigmas": list(self.noise_sigmas)}

    def descent(self) -> dict:
        """match_embeddings' keyword arguments."""
        return {"box": self.box, "steps": self.steps, "lr": self.lr, "optimizer": self.optimizer,
                "loss_threshold": self.loss_threshold, "cos_threshold": self.cos_threshold, "eps_linf": self.eps_linf,
                "normalize_features": self.normalize_features}


@dataclass(frozen=True)
class Pairs:
    """(source, target) image indices, one entry per pair, in pair-id order."""
    source: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.source)


def choose_pairs(labels: Sequence[int], num_classes: int, sources_per_class: int, seed: int) -> Pairs:
    """For each class in order, up to `sources_per_class` of its images as sources (drawn
    without replacement), and for each source one target image from every other class in
    order (drawn at random from that class). Class c draws from its own generator,
    numpy's default_rng([seed, c]), so its pairs do not change when other classes do.
    Raises ValueError when a class has no image (it could be no pair's target)."""
    labels = np.asarray(labels)
    members = [np.flatnonzero(labels == c) for c in range(num_classes)]
    empty = [c for c in range(num_classes) if not len(members[c])]
    if empty:
        raise ValueError(f"classes {empty} have no image")
    sources, targets = [], []
    for c in range(num_classes):
        rng = np.random.default_rng([seed, c])
        for source in rng.permutation(members[c])[:sources_per_class]:
            for d in range(num_classes):
                if d != c:
                    sources.append(source)
                    targets.append(members[d][rng.integers(len(members[d]))])
    return Pairs(np.asarray(sources, dtype=np.int64), np.asarray(targets, dtype=np.int64))


def noise_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator of its own for one image's noise draws (`stream` tells matched
    from natural images), so the draws do not depend on which images ran before."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass
class BoxPath:
    """How a model's [0, 1] pixels become the tensor the descent moves (`to_box`), back
    (`to_pixels01`), and that tensor's raw image features (`features(x, grad)`)."""
    to_box: Callable[[torch.Tensor], torch.Tensor]
    to_pixels01: Callable[[torch.Tensor], torch.Tensor]
    features: Callable[..., torch.Tensor]


def box_path(model: VisionLanguageModel, box: str) -> BoxPath:
    """`normalized`: the model-normalised tensor, as the authors descend
    (`encode_pixels`); `pixel01`: [0, 1] pixels with the normalisation inside the graph
    (`image_features`)."""
    if box == "normalized":
        return BoxPath(model.normalize_pixels, lambda x: invert_normalization(model.normalize_pixels, x),
                       model.encode_pixels)
    if box == "pixel01":
        return BoxPath(lambda p: p, lambda p: p, model.image_features)
    raise ValueError(f"unknown box {box!r}")


def require_image_gradients(model: VisionLanguageModel) -> None:
    """InputError unless a forward pass of the image tower with gradients on gives
    features that gradients can flow back from (a grey image at the model's size)."""
    pixels = model.to_pixels(Image.new("RGB", (64, 64), (128, 128, 128)))[None].float().requires_grad_(True)
    try:
        features = model.image_features(pixels, grad=True)
    except RuntimeError as err:
        raise InputError(f"model {model.spec.spec}: its image tower failed on a test image ({err})") from None
    if features.grad_fn is None:
        raise InputError(f"model {model.spec.spec}: its image tower gives no gradients with respect to the pixels "
                         f"(a forward pass with gradients on returned features with no grad_fn), so nothing can "
                         f"be matched")


def unit(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=1)


def class_probabilities(unit_features: torch.Tensor, class_embeddings: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Zero-shot probabilities [N, C]: softmax over logit_scale x cosine to each class."""
    return torch.softmax(logit_scale * unit_features @ class_embeddings.T, dim=1)


class PairRecords:
    """Every pair's record as one float32 matrix [P, len(RECORD_FIELDS) + 2 S]: a
    column per field (`field(name)`), then `shift` and `agreement` as [S, P]."""

    def __init__(self, rows: np.ndarray, num_sigmas: int):
        self.rows, self.num_sigmas = np.asarray(rows, dtype=np.float32), num_sigmas

    @staticmethod
    def width(num_sigmas: int) -> int:
        return len(RECORD_FIELDS) + 2 * num_sigmas

    def field(self, name: str) -> np.ndarray:
        return self.rows[:, RECORD_FIELDS.index(name)]

    @property
    def shift(self) -> np.ndarray:
        start = len(RECORD_FIELDS)
        return self.rows[:, start:start + self.num_sigmas].T

    @property
    def agreement(self) -> np.ndarray:
        start = len(RECORD_FIELDS) + self.num_sigmas
        return self.rows[:, start:start + self.num_sigmas].T


class PairRunner:
    """One model's pairs, ready to descend. `source_pixels` [U, 3, H, W] are the source
    images in [0, 1] and `source_slot[i]` pair i's row there; `target_features` [P, D]
    the raw features each pair aims at; `class_embeddings` [C, D] the unit zero-shot
    class embeddings. `run(pair_ids)` descends those pairs and writes their records
    (and, for ids in `keep_tensors`, the matched tensor) to `checkpoint`."""

    def __init__(self, model: VisionLanguageModel, options: MatchingOptions, source_pixels: torch.Tensor,
                 source_slot: np.ndarray, target_features: torch.Tensor, class_embeddings: torch.Tensor,
                 checkpoint: RunCheckpoint, keep_tensors: Sequence[int] = (), progress: bool = True):
        self.model, self.options, self.checkpoint, self.progress = model, options, checkpoint, progress
        self.path = box_path(model, options.box)
        self.source_pixels, self.source_slot = source_pixels, np.asarray(source_slot)
        self.target_features = target_features
        self.classes = class_embeddings.to(model.device)
        self.keep_tensors = set(int(i) for i in keep_tensors)
        rows = options.pair_batch_size
        self.descent_features = fixed_rows(lambda x: self.path.features(x, grad=True), rows)
        self.box_features = fixed_rows(lambda x: self.path.features(x), rows)
        self.pixel_features = fixed_rows(lambda p: model.image_features(p), rows)

    def source_tensors(self, pair_ids: np.ndarray) -> torch.Tensor:
        """The box tensors the pairs start from, on the model's device."""
        pixels = self.source_pixels[torch.as_tensor(self.source_slot[pair_ids])].to(self.model.device)
        return self.path.to_box(pixels)

    def run(self, pair_ids: Sequence[int]) -> None:
        """Descend the pairs `pair_ids` (in that order, `pair_batch_size` in a pool, a
        finished pair's place taken by the next) and checkpoint each one's record as it
        finishes; the checkpoint is flushed at the end. Any split of the pairs, in any
        order, gives the same records."""
        pair_ids = np.asarray(pair_ids, dtype=np.int64)
        chunk = CHUNK_POOLS * self.options.pair_batch_size
        with tqdm(total=len(pair_ids), desc=f"pairs  [{self.model.spec.spec}]", unit="pair",
                  disable=not self.progress, dynamic_ncols=True) as bar:
            for start in range(0, len(pair_ids), chunk):
                ids = pair_ids[start:start + chunk]

                def finished(step: DescentStep, ids=ids):
                    if bool(step.finished.any()):
                        done = step.finished
                        local = step.pair_index[done].cpu().numpy()
                        self._record(ids[local], step.evaluated[done], step.steps_taken[done], step.converged[done],
                                     step.distance[done], step.cosine[done])
                        bar.update(len(local))

                match_embeddings(self.descent_features, self.source_tensors(ids),
                                 self.target_features[torch.as_tensor(ids)].to(self.model.device),
                                 pair_batch_size=self.options.pair_batch_size, callback=finished,
                                 **self.options.descent())
        self.checkpoint.flush()

    def _record(self, pair_ids, matched, steps, converged, distance, cosine) -> None:
        """Records of pairs that just finished, to the checkpoint (flushed when due)."""
        options = self.options
        with torch.no_grad():
            matched01 = self.path.to_pixels01(matched)
            prediction = (unit(self.box_features(matched)) @ self.classes.T).argmax(dim=1)
            original01 = self.source_pixels[torch.as_tensor(self.source_slot[pair_ids])]
            sizes = perturbation_sizes(original01, matched01)
        rows = np.zeros((len(pair_ids), PairRecords.width(len(options.noise_sigmas))), dtype=np.float32)
        for column, values in zip(RECORD_FIELDS[:5], (steps, converged, distance, cosine, prediction)):
            rows[:, RECORD_FIELDS.index(column)] = values.detach().float().cpu().numpy()
        for name in ("linf", "l2", "psnr"):
            rows[:, RECORD_FIELDS.index(name)] = sizes[name]
        start = len(RECORD_FIELDS)
        for row, pair_id in enumerate(pair_ids):
            statistics = image_noise_statistics(self.model, matched01[row:row + 1], pair_id, MATCHED_STREAM,
                                                self.classes, options)
            rows[row, RECORD_FIELDS.index("prediction_8bit")] = statistics["clean_prediction"][0]
            rows[row, start:start + len(options.noise_sigmas)] = statistics["embedding_shift"][:, 0]
            rows[row, start + len(options.noise_sigmas):] = statistics["label_agreement"][:, 0]
        self.checkpoint.add(RECORDS, pair_ids, rows)
        keep = [row for row, pair_id in enumerate(pair_ids) if int(pair_id) in self.keep_tensors]
        if keep:
            kept = matched[torch.as_tensor(keep)].detach().float().cpu()
            self.checkpoint.add(TENSORS, [pair_ids[row] for row in keep], kept.reshape(len(keep), -1).numpy())
        self.checkpoint.flush(force=False)


def image_noise_statistics(model: VisionLanguageModel, pixels01: torch.Tensor, index: int, stream: int,
                           class_embeddings: torch.Tensor, options: MatchingOptions) -> dict:
    """noise_statistics of one image ([1, 3, H, W] in [0, 1]) with its own generator:
    one forward of the clean image, then all its noisy copies (sigmas x draws) in one
    forward, so its numbers never depend on other images."""
    return noise_statistics(lambda p: model.image_features(p), pixels01, options.noise_sigmas, options.noise_draws,
                            noise_generator(options.seed, stream, index), class_embeddings=class_embeddings,
                            batch_size=len(options.noise_sigmas) * options.noise_draws)


def natural_statistics(model: VisionLanguageModel, pixels01: torch.Tensor, image_ids: Sequence[int],
                       class_embeddings: torch.Tensor, options: MatchingOptions) -> dict:
    """noise_statistics of natural images (`pixels01` [N, 3, H, W], their ids in the
    image list naming each one's noise generator), one image at a time as the matched
    ones: `embedding_shift` and `label_agreement` [S, N]."""
    classes = class_embeddings.to(model.device)
    shift, agreement = [], []
    for row, image_id in enumerate(image_ids):
        statistics = image_noise_statistics(model, pixels01[row:row + 1].to(model.device), image_id, NATURAL_STREAM,
                                            classes, options)
        shift.append(statistics["embedding_shift"].astype(np.float32))
        agreement.append(statistics["label_agreement"].astype(np.float32))
    return {"embedding_shift": np.concatenate(shift, axis=1), "label_agreement": np.concatenate(agreement, axis=1)}


def raw_features(model: VisionLanguageModel, pixels01: torch.Tensor, rows: int, batch: int = 256) -> torch.Tensor:
    """Raw image features [N, D] of [0, 1] pixels, no gradients, in forwards of `rows`
    rows (so they equal what a pool computes), on the CPU."""
    features = fixed_rows(lambda p: model.image_features(p), rows)
    with torch.no_grad():
        return torch.cat([features(pixels01[start:start + batch].to(model.device)).cpu()
                          for start in range(0, pixels01.shape[0], batch)])


def load_records(checkpoint: RunCheckpoint, num_pairs: int, num_sigmas: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(found [num_pairs], rows or None) of the pairs an earlier run finished."""
    found, rows = checkpoint.load(RECORDS, range(num_pairs))
    if rows is not None and rows.shape[1] != PairRecords.width(num_sigmas):
        raise ValueError(f"checkpoint {checkpoint.folder} holds rows of another width")
    return found, rows

