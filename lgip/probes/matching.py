"""Embedding matching and noise detection: the maths of run_embedding_matching.py.

After Salman, Shams, Liu and Zhu, "Intriguing Differences Between Zero-Shot and
Systematic Evaluations of Vision-Language Transformer Models" (arXiv:2402.08473): descend
on an image's pixels until its image embedding matches another image's
(`match_embeddings`, many pairs in one forward/backward), measure how much the pixels
changed (`perturbation_sizes`), look at how the embeddings of matched and natural images
react to Gaussian pixel noise (`noise_statistics`) and how well that separates them
(`roc_auc`, `tpr_at_fpr`, `detection_report`), and check the paper's linear explanation
(`jacobian_singular_values`, `linear_approximation_check`).

Every function takes the image tower as a plain callable `features(batch) -> [B, D]`
(raw, not L2-normalised features), so the maths is tested on linear maps and runs on any
backend: pass `model.encode_pixels` (normalised tensors) or `model.image_features`
([0, 1] pixels). Nothing here draws random numbers except from a generator it is given.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

Features = Callable[[torch.Tensor], torch.Tensor]

BOXES = ("normalized", "pixel01")
OPTIMIZERS = ("sgd", "adam")
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults
ADAM_EPS = 1e-8
PIXEL_LEVELS = 255  # detection sees images as 8-bit files hold them
DETECTION_FPR = 0.05
# How a statistic points: +1 when a matched image is expected to score higher than a
# natural one (it moves more under noise), -1 when lower (its label survives noise less).
STATISTIC_DIRECTION = {"embedding_shift": 1.0, "label_agreement": -1.0}


@dataclass
class MatchResult:
    """What `match_embeddings` returns, one row per (source, target) pair, on the
    source tensor's device. `matched` is in the box's units (as `x_source`); `steps`
    counts the updates each pair took; `converged` says whether it met both stopping
    thresholds; `distance` (squared L2, in the loss's feature space) and `cosine` (raw
    features) are measured at the returned tensor."""
    matched: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    distance: torch.Tensor
    cosine: torch.Tensor


@dataclass
class DescentStep:
    """One iteration of `match_embeddings`, as its callback sees it. Aligned row by row
    with `pair_index` (the pairs evaluated in this iteration): `evaluated` (their
    tensors), `steps_taken` (updates each had taken before), `distance` / `cosine` (at
    `evaluated`), `converged` (met both thresholds) and `finished` (converged or out of
    steps: `evaluated` is its final tensor, so a caller can save it now). Then
    `updated_index` (the pairs that took a step: pair_index[~finished]) and `updated`
    (their new tensors, after the box clamp and the L-infinity bound)."""
    pair_index: torch.Tensor
    evaluated: torch.Tensor
    steps_taken: torch.Tensor
    distance: torch.Tensor
    cosine: torch.Tensor
    converged: torch.Tensor
    finished: torch.Tensor
    updated_index: torch.Tensor
    updated: torch.Tensor


def _per_image(values: torch.Tensor, reduce) -> torch.Tensor:
    """`reduce` (amin / amax) over every dimension but the first, kept broadcastable."""
    dims = tuple(range(1, values.dim()))
    return reduce(values, dim=dims, keepdim=True) if dims else values


def _box_limits(x_source: torch.Tensor, box: str, lower, upper):
    """The box's lower and upper limits as tensors broadcastable against `x_source`
    (leading dimension 1 or one row per pair): per-image global min and max of the
    source for `normalized`, [0, 1] for `pixel01`, or the caller's `lower` / `upper`.
    Raises ValueError when a source lies outside them."""
    if lower is None:
        lower = _per_image(x_source, torch.amin) if box == "normalized" else 0.0
    if upper is None:
        upper = _per_image(x_source, torch.amax) if box == "normalized" else 1.0
    limits = []
    for limit in (lower, upper):
        limit = torch.as_tensor(limit, dtype=x_source.dtype, device=x_source.device)
        while limit.dim() < x_source.dim():
            limit = limit.unsqueeze(0)
        limits.append(limit)
    if bool((x_source < limits[0]).any()) or bool((x_source > limits[1]).any()):
        raise ValueError(f"the source tensors lie outside the {box} box's limits")
    return limits


def _rows(limit: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The limit's rows for these pairs (a limit shared by all pairs is returned as is)."""
    return limit[index] if limit.shape[0] > 1 else limit


def _distance_and_cosine(output: torch.Tensor, target: torch.Tensor, normalize_features: bool):
    """Per row: the squared L2 distance the loss is built from (between L2-normalised
    features when `normalize_features`) and the cosine of the raw features."""
    output = output.to(target.dtype)
    cosine = torch.nn.functional.cosine_similarity(output, target, dim=1)
    if normalize_features:
        output = torch.nn.functional.normalize(output, dim=1)
        target = torch.nn.functional.normalize(target, dim=1)
    return (output - target).pow(2).sum(dim=1), cosine


def match_embeddings(features: Features, x_source: torch.Tensor, target_features: torch.Tensor, *,
                     box: str = "normalized", lower=None, upper=None, steps: int = 15000, lr: float = 0.1,
                     optimizer: str = "sgd", loss_threshold: float = 1e-4, cos_threshold: float = 0.97,
                     eps_linf: Optional[float] = None, normalize_features: bool = False,
                     pair_batch_size: Optional[int] = None,
                     callback: Optional[Callable[[DescentStep], None]] = None) -> MatchResult:
    """Descend on each source tensor until `features` of it matches its target row.

    Pair i starts at `x_source[i]` and moves to minimise the mean squared error between
    `features(x)` and `target_features[i]` (raw features, or both L2-normalised with
    `normalize_features`). Each pair's loss is its own mean over the D feature
    coordinates and the batch loss is their sum, so a pair takes exactly the steps it
    would take alone. `optimizer` is `sgd` (x -= lr * grad, the authors' fixed step) or
    `adam` (torch.optim.Adam's update with betas 0.9/0.999, eps 1e-8, kept per pair).

    After every update each tensor is clamped to its box: for `box="normalized"` (the
    model-normalised tensor, as the authors optimise) to its source's global minimum and
    maximum, for `box="pixel01"` ([0, 1] pixels, normalisation inside `features`) to
    [0, 1]; `lower` / `upper` (numbers or broadcastable tensors) replace those limits.
    With `eps_linf`, each element also stays within eps_linf of its source, in the box's
    own units: [0, 1] pixels for `pixel01`, normalised units (pixels / channel std) for
    `normalized`.

    A pair stops, its tensor frozen and left out of later forward passes, as soon as its
    squared L2 distance (summed over the D coordinates, in the loss's feature space) is
    below `loss_threshold` and its raw cosine above `cos_threshold`, checked before each
    update, or after `steps` updates. At most `pair_batch_size` pairs are in a
    forward/backward at once (all of them when None); a finished pair's place is taken
    by the next waiting pair, so memory is bounded by it. Uses no randomness: the same
    inputs give the same result. `callback`, if given, sees every iteration
    (`DescentStep`).

    `features` maps a [B, ...] tensor to [B, D] features and must be differentiable;
    only gradients with respect to the pixels are taken (the model's parameters are
    never given a .grad)."""
    if box not in BOXES:
        raise ValueError(f"box must be one of {BOXES}, not {box!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    if eps_linf is not None and not eps_linf > 0:
        raise ValueError(f"eps_linf must be positive, not {eps_linf}")
    if steps < 0 or not lr > 0:
        raise ValueError(f"steps must be >= 0 and lr > 0 (got {steps}, {lr})")
    if pair_batch_size is not None and pair_batch_size < 1:
        raise ValueError(f"pair_batch_size must be >= 1, not {pair_batch_size}")
    num_pairs = x_source.shape[0]
    if target_features.shape[0] != num_pairs:
        raise ValueError(f"{num_pairs} sources but {target_features.shape[0]} targets")
    if not x_source.is_floating_point():
        raise ValueError("x_source must be a floating-point tensor")

    device = x_source.device
    x_source = x_source.detach()
    # Losses in float32 at least (float64 when the sources are, as in exact checks).
    targets = target_features.detach().to(device=device, dtype=torch.promote_types(x_source.dtype, torch.float32))
    lower, upper = _box_limits(x_source, box, lower, upper)
    capacity = num_pairs if pair_batch_size is None else pair_batch_size

    result = MatchResult(matched=x_source.clone(), steps=torch.zeros(num_pairs, dtype=torch.long, device=device),
                         converged=torch.zeros(num_pairs, dtype=torch.bool, device=device),
                         distance=targets.new_zeros(num_pairs), cosine=targets.new_zeros(num_pairs))
    # The pool: the pairs in the current forward/backward, one row each in every tensor.
    pool = _pool_rows(torch.zeros(0, dtype=torch.long, device=device), x_source, targets, lower, upper, eps_linf,
                      optimizer)
    next_pair = 0
    while next_pair < num_pairs or pool["index"].numel():
        admit = min(capacity - pool["index"].numel(), num_pairs - next_pair)
        if admit > 0:
            new = _pool_rows(torch.arange(next_pair, next_pair + admit, device=device), x_source, targets, lower,
                             upper, eps_linf, optimizer)
            pool = {name: torch.cat([tensor, new[name]]) for name, tensor in pool.items()}
            next_pair += admit

        current = pool["x"].requires_grad_(True)
        with torch.enable_grad():
            distance, cosine = _distance_and_cosine(features(current), pool["target"], normalize_features)
        distance_now, cosine_now = distance.detach(), cosine.detach()
        converged = (distance_now < loss_threshold) & (cosine_now > cos_threshold)
        finished = converged | (pool["taken"] >= steps)
        going = ~finished
        finishing, continuing = bool(finished.any()), bool(going.any())
        keep = going if finishing else slice(None)  # the rows of the pairs that go on (no copy when all do)

        if continuing:
            # The loss is the per-pair MSE (squared distance / D), summed over the pairs
            # that go on; gradients only with respect to the pixels.
            loss = distance[keep].sum() / targets.shape[1]
            (gradient,) = torch.autograd.grad(loss, current)
            moments = (pool["first"][keep], pool["second"][keep]) if optimizer == "adam" else (None, None)
            updated, first, second = _step(current.detach()[keep], gradient[keep], *moments, pool["taken"][keep],
                                           optimizer, lr)
            updated = torch.clamp(updated, pool["low"][keep], pool["high"][keep])
        else:
            updated = first = second = current.detach()[:0]
        current = current.detach()

        if callback is not None:
            callback(DescentStep(pair_index=pool["index"], evaluated=current, steps_taken=pool["taken"],
                                 distance=distance_now, cosine=cosine_now, converged=converged, finished=finished,
                                 updated_index=pool["index"][keep], updated=updated))

        if finishing:
            done = pool["index"][finished]
            result.matched[done] = current[finished]
            result.steps[done] = pool["taken"][finished]
            result.converged[done] = converged[finished]
            result.distance[done] = distance_now[finished]
            result.cosine[done] = cosine_now[finished]
            pool = {name: tensor[keep] for name, tensor in pool.items()}
        pool["x"], pool["taken"] = updated, pool["taken"] + 1
        if optimizer == "adam":
            pool["first"], pool["second"] = first, second
    return result


def _pool_rows(index, x_source, targets, lower, upper, eps_linf, optimizer) -> dict:
    """The pool's rows for pairs `index`, as they start: their tensors, targets, steps
    taken (0), element-wise limits (the box intersected with the L-infinity ball around
    the source: it holds the source, so it is never empty) and Adam moments (zeros)."""
    source = x_source[index]
    low = _rows(lower, index).expand_as(source)
    high = _rows(upper, index).expand_as(source)
    if eps_linf is not None:
        low, high = torch.maximum(low, source - eps_linf), torch.minimum(high, source + eps_linf)
    rows = {"index": index, "x": source.clone(), "target": targets[index], "low": low.contiguous(),
            "high": high.contiguous(), "taken": torch.zeros_like(index)}
    if optimizer == "adam":
        rows["first"], rows["second"] = torch.zeros_like(source), torch.zeros_like(source)
    return rows


def _step(x, gradient, first, second, taken, optimizer: str, lr: float):
    """The unclamped next tensors of the pairs that go on, and their new Adam moments
    (None for sgd). Adam's bias correction uses each pair's own step count, as a
    separate torch.optim.Adam per pair would."""
    if optimizer == "sgd":
        return x - lr * gradient, None, None
    beta1, beta2 = ADAM_BETAS
    first = first * beta1 + (1 - beta1) * gradient
    second = second * beta2 + (1 - beta2) * gradient * gradient
    step_number = (taken + 1).to(x.dtype).view((-1,) + (1,) * (x.dim() - 1))
    correction1 = 1 - beta1 ** step_number
    correction2 = 1 - beta2 ** step_number
    denominator = second.sqrt() / correction2.sqrt() + ADAM_EPS
    return x - (lr / correction1) * first / denominator, first, second


def invert_normalization(normalize: Callable[[torch.Tensor], torch.Tensor], normalized: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels from a normalised tensor, for any element-wise affine `normalize`
    (a model's mean/std step): with n(0) and n(1) its values at all-zeros and all-ones,
    pixels = (x - n(0)) / (n(1) - n(0)). Values outside [0, 1] are kept (a matched tensor
    in the `normalized` box may leave the pixel range). Raises ValueError when `normalize`
    is not affine at 0.5."""
    shape = (1,) + tuple(normalized.shape[1:])
    with torch.no_grad():
        at_zero = normalize(torch.zeros(shape, dtype=normalized.dtype, device=normalized.device))
        at_one = normalize(torch.ones(shape, dtype=normalized.dtype, device=normalized.device))
        at_half = normalize(torch.full(shape, 0.5, dtype=normalized.dtype, device=normalized.device))
    if not torch.allclose(at_half, (at_zero + at_one) / 2, rtol=1e-5, atol=1e-6):
        raise ValueError("the normalisation is not an element-wise affine map")
    return (normalized - at_zero) / (at_one - at_zero)


def perturbation_sizes(original01, matched01) -> Dict[str, np.ndarray]:
    """Per pair, the change from `original01` to `matched01` ([P, ...] pixels in
    [0, 1], tensors or arrays): `linf` (largest absolute change), `l2` (Euclidean norm
    of the change) and `psnr` (10 log10(1 / mean squared change), in dB; inf when
    nothing changed), as float64 arrays."""
    original = torch.as_tensor(original01).detach().to("cpu", torch.float64)
    matched = torch.as_tensor(matched01).detach().to("cpu", torch.float64)
    if original.shape != matched.shape:
        raise ValueError(f"shapes differ: {tuple(original.shape)} and {tuple(matched.shape)}")
    change = (matched - original).reshape(original.shape[0], -1)
    mse = change.pow(2).mean(dim=1)
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(1.0 / mse.numpy())
    return {"linf": change.abs().amax(dim=1).numpy(), "l2": change.norm(dim=1).numpy(), "psnr": psnr}


def roc_auc(scores_positive, scores_negative) -> float:
    """The area under the ROC curve: the probability that a random positive scores
    higher than a random negative, ties counting one half. Exact, from midranks of the
    pooled scores (Mann-Whitney U), in O(n log n)."""
    positive = np.asarray(scores_positive, dtype=np.float64).ravel()
    negative = np.asarray(scores_negative, dtype=np.float64).ravel()
    if positive.size == 0 or negative.size == 0:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    pooled = np.concatenate([positive, negative])
    if np.isnan(pooled).any():
        raise ValueError("roc_auc got NaN scores")
    _, group, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    # Midrank of each tied group: the ranks it spans are first+1 ... first+count.
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    midrank = first + (counts + 1) / 2.0
    rank_sum = midrank[group[:positive.size]].sum()
    u_statistic = rank_sum - positive.size * (positive.size + 1) / 2.0
    return float(u_statistic / (positive.size * negative.size))


def tpr_at_fpr(scores_positive, scores_negative, fpr: float = DETECTION_FPR) -> float:
    """The highest true-positive rate of a rule `score >= threshold` whose
    false-positive rate on the negatives is at most `fpr` (no random tie-breaking)."""
    positive = np.sort(np.asarray(scores_positive, dtype=np.float64).ravel())
    negative = np.sort(np.asarray(scores_negative, dtype=np.float64).ravel())
    if positive.size == 0 or negative.size == 0:
        raise ValueError("tpr_at_fpr needs at least one positive and one negative score")
    thresholds = np.concatenate([np.unique(np.concatenate([positive, negative])), [np.inf]])
    false_rate = (negative.size - np.searchsorted(negative, thresholds, side="left")) / negative.size
    true_rate = (positive.size - np.searchsorted(positive, thresholds, side="left")) / positive.size
    return float(true_rate[false_rate <= fpr].max())


def quantize_pixels(pixels01: torch.Tensor) -> torch.Tensor:
    """Pixels as an 8-bit file stores them: clamped to [0, 1], rounded to 1/255."""
    return torch.round(pixels01.clamp(0.0, 1.0) * PIXEL_LEVELS) / PIXEL_LEVELS


def _unit_features(features: Features, pixels01: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.nn.functional.normalize(features(pixels01).float(), dim=1)


def noise_statistics(features: Features, images01: torch.Tensor, sigmas: Sequence[float], draws: int,
                     generator: torch.Generator, *, class_embeddings: Optional[torch.Tensor] = None,
                     batch_size: int = 256) -> Dict[str, np.ndarray]:
    """How each image's embedding reacts to Gaussian pixel noise.

    Each image is first quantised to 8 bits (as a file would hold it); its noisy copies
    are quantise(image + sigma * z) with z ~ N(0, I) in [0, 1] pixel space, so clean
    and noisy inputs pass the same quantisation and the clean one is not favoured. The
    same `draws` standard-normal tensors z are used at every sigma (drawn from
    `generator` on the CPU, image after image, so the numbers do not depend on
    `batch_size`). `features` maps [0, 1] pixels to raw features.

    Returns float64 arrays: `embedding_shift` [S, N] (mean over draws of 1 - cosine to
    the noise-free embedding) and, with `class_embeddings` [K, D] (one row per class),
    `label_agreement` [S, N] (share of draws whose nearest class is the noise-free one)
    and `clean_prediction` [N]. Forward passes run `batch_size` noisy images at a time."""
    if draws < 1 or batch_size < 1:
        raise ValueError(f"draws and batch_size must be >= 1 (got {draws}, {batch_size})")
    sigma_values = torch.as_tensor(list(sigmas), dtype=torch.float32)
    num_images, num_sigmas = images01.shape[0], sigma_values.numel()
    device = images01.device
    clean = quantize_pixels(images01.detach().float())
    clean_embeddings = torch.cat([_unit_features(features, clean[i:i + batch_size])
                                  for i in range(0, num_images, batch_size)])
    classes = None
    if class_embeddings is not None:
        classes = torch.nn.functional.normalize(class_embeddings.float().to(device), dim=1)
        clean_prediction = (clean_embeddings @ classes.T).argmax(dim=1)

    shift = torch.zeros(num_sigmas, num_images, dtype=torch.float64)
    agreement = torch.zeros(num_sigmas, num_images, dtype=torch.float64)
    per_image = num_sigmas * draws
    noise_of = {}  # image -> its draws' standard-normal tensors, while a batch needs them
    for start in range(0, num_images * per_image, batch_size):
        flat = torch.arange(start, min(start + batch_size, num_images * per_image))
        image, sigma, draw = flat // per_image, (flat // draws) % num_sigmas, flat % draws
        for index in image.unique().tolist():
            if index not in noise_of:
                noise_of[index] = torch.randn((draws,) + tuple(images01.shape[1:]), generator=generator)
        noise = torch.stack([noise_of[i][d] for i, d in zip(image.tolist(), draw.tolist())]).to(device)
        scale = sigma_values[sigma].to(device).view((-1,) + (1,) * (noise.dim() - 1))
        noisy = quantize_pixels(clean[image.to(device)] + scale * noise)
        embeddings = _unit_features(features, noisy)
        cosine = (embeddings * clean_embeddings[image.to(device)]).sum(dim=1)
        shift.index_put_((sigma, image), (1 - cosine).double().cpu(), accumulate=True)
        if classes is not None:
            same = (embeddings @ classes.T).argmax(dim=1) == clean_prediction[image.to(device)]
            agreement.index_put_((sigma, image), same.double().cpu(), accumulate=True)
        for index in [i for i in noise_of if i < int(image[-1])]:
            del noise_of[index]
    statistics = {"embedding_shift": (shift / draws).numpy()}
    if classes is not None:
        statistics["label_agreement"] = (agreement / draws).numpy()
        statistics["clean_prediction"] = clean_prediction.cpu().numpy()
    return statistics


def detection_report(stats_matched: Dict[str, np.ndarray], stats_natural: Dict[str, np.ndarray],
                     sigmas: Sequence[float], fpr: float = DETECTION_FPR) -> dict:
    """How well each noise statistic separates matched (positive) from natural images.

    For every sigma and every statistic of `STATISTIC_DIRECTION` present in both inputs
    ([S, N] arrays from `noise_statistics`): its ROC AUC and its true-positive rate at
    `fpr` false positives, with the statistic oriented so that a matched image is expected
    to score higher (label agreement enters negated: a matched image is expected to keep
    its label less often). Then per statistic the best sigma (highest AUC, the smallest
    such sigma on ties) with its AUC and TPR. JSON-ready."""
    sigmas = [float(s) for s in sigmas]
    names = [name for name in STATISTIC_DIRECTION if name in stats_matched and name in stats_natural]
    per_sigma = []
    for row, sigma in enumerate(sigmas):
        entry = {"sigma": sigma}
        for name in names:
            positive = STATISTIC_DIRECTION[name] * np.asarray(stats_matched[name])[row]
            negative = STATISTIC_DIRECTION[name] * np.asarray(stats_natural[name])[row]
            entry[name] = {"auc": roc_auc(positive, negative), "tpr_at_fpr": tpr_at_fpr(positive, negative, fpr)}
        per_sigma.append(entry)
    best = {}
    for name in names:
        row = int(np.argmax([entry[name]["auc"] for entry in per_sigma]))
        best[name] = {"sigma": sigmas[row], **per_sigma[row][name]}
    return {"fpr": fpr, "per_sigma": per_sigma, "best": best}


def _jacobian(features: Features, x_one: torch.Tensor, chunk_size: Optional[int]) -> torch.Tensor:
    """The [D, n] Jacobian of `features` at one input (n = its number of elements)."""
    def single(flat):
        return features(flat.view((1,) + tuple(x_one.shape))).float()[0]

    with warnings.catch_warnings():
        # Some attention kernels have no vmap rule for their backward; torch then loops
        # over the rows itself and says so. The Jacobian is the same.
        warnings.filterwarnings("ignore", message="There is a performance drop", category=UserWarning)
        jacobian = torch.func.jacrev(single, chunk_size=chunk_size)(x_one.detach().reshape(-1))
    return jacobian.reshape(jacobian.shape[0], -1)


def jacobian_singular_values(features: Features, x: torch.Tensor, *, chunk_size: Optional[int] = None) -> torch.Tensor:
    """The singular values (descending) of the Jacobian of `features` at each of the
    few inputs `x` [N, ...], as an [N, min(D, n)] CPU float32 tensor. Computed with
    torch.func.jacrev (D backward passes per input, `chunk_size` of them at once)."""
    return torch.stack([torch.linalg.svdvals(_jacobian(features, x[i], chunk_size).double()).float().cpu()
                        for i in range(x.shape[0])])


def linear_approximation_check(features: Features, x: torch.Tensor, sigma: float, draws: int, *,
                               generator: torch.Generator, batch_size: int = 256,
                               chunk_size: Optional[int] = None) -> np.ndarray:
    """How well f(x + delta) ~ f(x) + J delta describes Gaussian input noise at `sigma`:
    for each input of `x` [N, ...], the sample covariance C of features(x + sigma z) over
    `draws` draws of z ~ N(0, I) (from `generator`, on the CPU) against the linear
    prediction P = sigma^2 J J^T, as the relative Frobenius error |C - P| / |P|. Sampling
    alone leaves an error of order sqrt(D / draws); much more than that means the
    encoder is not linear at this scale. Returns float64 [N]."""
    errors = []
    for i in range(x.shape[0]):
        jacobian = _jacobian(features, x[i], chunk_size).double()
        predicted = sigma ** 2 * jacobian @ jacobian.T
        outputs = []
        with torch.no_grad():
            for start in range(0, draws, batch_size):
                count = min(batch_size, draws - start)
                noise = torch.randn((count,) + tuple(x.shape[1:]), generator=generator).to(x.device, x.dtype)
                outputs.append(features(x[i:i + 1] + sigma * noise).double().cpu())
        observed = torch.cov(torch.cat(outputs).T)
        errors.append(float(torch.linalg.norm(observed - predicted.cpu()) / torch.linalg.norm(predicted)))
    return np.asarray(errors, dtype=np.float64)
