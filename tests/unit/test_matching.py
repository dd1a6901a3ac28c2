"""lgip.probes.matching: batched embedding matching on linear encoders (where the answer
is known in closed form), the detection statistics against brute force, the Jacobian
checks, and one descent through a tiny real open_clip image tower."""
import itertools

import numpy as np
import pytest
import torch

from lgip.probes.matching import (DescentStep, detection_report, invert_normalization, jacobian_singular_values,
                                  linear_approximation_check, match_embeddings, noise_statistics, perturbation_sizes,
                                  quantize_pixels, roc_auc, tpr_at_fpr)

INPUTS, OUTPUTS, PAIRS = 12, 5, 4  # a wide linear encoder: fewer outputs than inputs


def linear_problem(seed=0, dtype=torch.float64):
    """W [OUTPUTS, INPUTS], sources [PAIRS, 3, 2, 2] (INPUTS elements each) and targets."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(OUTPUTS, INPUTS, generator=generator, dtype=dtype)
    sources = torch.rand(PAIRS, 3, 2, 2, generator=generator, dtype=dtype)
    targets = torch.randn(PAIRS, OUTPUTS, generator=generator, dtype=dtype)
    return weights, sources, targets


def linear_features(weights):
    return lambda x: x.reshape(x.shape[0], -1) @ weights.T


def smoothness(weights):
    """The Lipschitz constant of the per-pair MSE's gradient: 2 sigma_max^2 / D."""
    return float(2 * torch.linalg.svdvals(weights)[0] ** 2 / weights.shape[0])


def record(events):
    def callback(event: DescentStep):
        events.append(event)
    return callback


LOOSE = {"lower": -1e6, "upper": 1e6}  # limits that never bind


def test_linear_descent_reaches_the_least_norm_change():
    weights, sources, targets = linear_problem()
    result = match_embeddings(linear_features(weights), sources, targets, steps=5000, lr=1 / smoothness(weights),
                              loss_threshold=1e-22, cos_threshold=0.999, **LOOSE)
    flat = sources.reshape(PAIRS, -1).numpy()
    residual = targets.numpy() - flat @ weights.numpy().T
    change, *_ = np.linalg.lstsq(weights.numpy(), residual.T, rcond=None)  # least-norm solution of W d = r
    expected = flat + change.T
    assert result.converged.all() and (result.steps < 5000).all()
    np.testing.assert_allclose(result.matched.reshape(PAIRS, -1).numpy(), expected, atol=1e-9)
    assert (result.distance < 1e-22).all() and (result.cosine > 0.999).all()


def test_loss_falls_at_every_step_for_a_small_step():
    weights, sources, targets = linear_problem(1)
    events = []
    match_embeddings(linear_features(weights), sources, targets, steps=40, lr=0.2 / smoothness(weights),
                     loss_threshold=0.0, cos_threshold=1.0, callback=record(events), **LOOSE)
    distances = torch.stack([event.distance for event in events])  # [iterations, pairs]: no pair stops early
    assert distances.shape == (41, PAIRS)
    assert (distances[1:] < distances[:-1]).all()


@pytest.mark.parametrize("box,optimizer", list(itertools.product(["normalized", "pixel01"], ["sgd", "adam"])))
def test_every_clamp_and_bound_holds_at_every_step(box, optimizer):
    weights, sources, targets = linear_problem(2, torch.float32)
    if box == "normalized":
        sources = (sources - 0.45) / 0.27  # like a model-normalised tensor
    eps = {"normalized": 0.3, "pixel01": 0.05}[box]
    events = []
    # A step far too large for the loss, so the limits must do the work.
    match_embeddings(linear_features(weights), sources, targets * 50, box=box, steps=25, lr=5.0, optimizer=optimizer,
                     eps_linf=eps, callback=record(events))
    flat_sources = sources.reshape(PAIRS, -1)
    low = flat_sources.amin(dim=1, keepdim=True) if box == "normalized" else torch.zeros(PAIRS, 1)
    high = flat_sources.amax(dim=1, keepdim=True) if box == "normalized" else torch.ones(PAIRS, 1)
    at_limit = 0
    for event in events:
        updated = event.updated.flatten(1)
        index = event.updated_index
        assert (updated >= low[index]).all() and (updated <= high[index]).all()
        change = (updated - flat_sources[index]).abs()
        assert (change <= eps + 1e-6).all()
        at_limit += int((change > eps - 1e-6).sum())
    assert len(events) == 26 and at_limit > 0  # the bound was reached, so it was tested


def test_the_same_inputs_give_the_same_numbers_whatever_the_pool_size():
    weights, sources, targets = linear_problem(3)
    targets[1] = linear_features(weights)(sources[1:2])[0]  # pair 1 is matched from the start
    kwargs = dict(steps=300, lr=0.5 / smoothness(weights), loss_threshold=1e-8, cos_threshold=0.99, **LOOSE)
    first = match_embeddings(linear_features(weights), sources, targets, **kwargs)
    again = match_embeddings(linear_features(weights), sources, targets, **kwargs)
    for name in ("matched", "steps", "converged", "distance", "cosine"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert first.steps[1] == 0 and first.converged[1]
    assert len(set(first.steps.tolist())) > 1  # pairs stop at different steps
    for pool in (1, 3):  # a finished pair's place is taken by the next one
        pooled = match_embeddings(linear_features(weights), sources, targets, pair_batch_size=pool, **kwargs)
        assert torch.equal(pooled.steps, first.steps)
        torch.testing.assert_close(pooled.matched, first.matched, rtol=0, atol=1e-12)


def test_a_pair_stops_when_both_thresholds_are_met_and_is_never_evaluated_again():
    weights, sources, targets = linear_problem(4)
    events = []
    loss_threshold, cos_threshold = 1e-3, 0.995
    result = match_embeddings(linear_features(weights), sources, targets, steps=60, lr=0.5 / smoothness(weights),
                              loss_threshold=loss_threshold, cos_threshold=cos_threshold, callback=record(events),
                              **LOOSE)
    for pair in range(PAIRS):
        seen = [(event.distance[row], event.cosine[row], bool(event.finished[row]))
                for event in events for row in torch.nonzero(event.pair_index == pair).flatten().tolist()]
        assert len(seen) == int(result.steps[pair]) + 1  # evaluated once per update, and once more at the end
        met = [bool(distance < loss_threshold and cosine > cos_threshold) for distance, cosine, _ in seen]
        assert not any(met[:-1]) and met[-1] == bool(result.converged[pair])
        assert [finished for *_, finished in seen] == [False] * (len(seen) - 1) + [True]
    for event in events:  # what a caller saving finished pairs as they come would save
        for row in torch.nonzero(event.finished).flatten().tolist():
            assert torch.equal(event.evaluated[row], result.matched[event.pair_index[row]])
    assert result.converged.any() and not result.converged.all()  # some pairs hit the 60-step cap
    assert (result.steps[~result.converged] == 60).all()


def test_normalized_features_match_the_direction_only():
    weights, sources, targets = linear_problem(8)
    result = match_embeddings(linear_features(weights), sources, targets * 100.0, normalize_features=True, steps=3000,
                              lr=0.5, loss_threshold=1e-8, cos_threshold=0.9999, **LOOSE)
    assert result.converged.all()
    torch.testing.assert_close(result.distance, 2 - 2 * result.cosine, rtol=0, atol=1e-12)  # unit vectors
    outputs = linear_features(weights)(result.matched)
    assert (outputs.norm(dim=1) < 10 * targets.norm(dim=1)).all()  # raw MSE would have pulled it to 100x


def test_adam_takes_the_steps_torch_optim_adam_takes():
    weights, sources, targets = linear_problem(5)
    lr, steps = 0.05, 12
    result = match_embeddings(linear_features(weights), sources[:1], targets[:1], optimizer="adam", steps=steps, lr=lr,
                              loss_threshold=0.0, cos_threshold=1.0, **LOOSE)
    x = sources[:1].clone().requires_grad_(True)
    reference = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        reference.zero_grad()
        torch.nn.functional.mse_loss(linear_features(weights)(x), targets[:1]).backward()
        reference.step()
    torch.testing.assert_close(result.matched, x.detach(), rtol=1e-10, atol=1e-12)


def test_bad_settings_are_refused():
    weights, sources, targets = linear_problem()
    features = linear_features(weights)
    for bad in ({"eps_linf": 0.0}, {"eps_linf": -1.0}, {"box": "pixels"}, {"optimizer": "lbfgs"},
                {"pair_batch_size": 0}, {"lr": 0.0}):
        with pytest.raises(ValueError):
            match_embeddings(features, sources, targets, steps=1, **bad)
    with pytest.raises(ValueError, match="outside"):
        match_embeddings(features, sources * 3, targets, box="pixel01", steps=1)


def brute_force_auc(positive, negative):
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in positive for n in negative])


def test_auc_equals_a_brute_force_count_of_pairs_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        positive = rng.integers(0, 6, rng.integers(1, 30))  # few values: many ties
        negative = rng.integers(0, 5, rng.integers(1, 30))
        assert roc_auc(positive, negative) == pytest.approx(brute_force_auc(positive, negative), abs=1e-12)
    assert roc_auc([2, 3], [0, 1]) == 1.0 and roc_auc([0, 1], [2, 3]) == 0.0 and roc_auc([1, 1], [1]) == 0.5
    with pytest.raises(ValueError):
        roc_auc([], [1.0])


def test_tpr_at_fpr_is_the_best_threshold_rule_found_by_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        positive = rng.integers(0, 8, rng.integers(1, 40)).astype(float)
        negative = rng.integers(0, 6, rng.integers(1, 40)).astype(float)
        for fpr in (0.0, 0.05, 0.3):
            best = max(np.mean(positive >= threshold) for threshold in [*positive, *negative, np.inf]
                       if np.mean(negative >= threshold) <= fpr)
            assert tpr_at_fpr(positive, negative, fpr) == pytest.approx(best)


def test_perturbation_sizes_in_pixels():
    original = torch.zeros(2, 3, 4, 4)
    matched = original.clone()
    matched[0, 1, 2, 3] = 0.1
    matched[1] = 0.5
    sizes = perturbation_sizes(original, matched)
    np.testing.assert_allclose(sizes["linf"], [0.1, 0.5])
    np.testing.assert_allclose(sizes["l2"], [0.1, 0.5 * np.sqrt(48)])
    np.testing.assert_allclose(sizes["psnr"], [10 * np.log10(48 / 0.01), 10 * np.log10(1 / 0.25)])
    assert perturbation_sizes(original, original)["psnr"][0] == np.inf


def toy_pixel_features():
    """A fixed non-linear map from [N, 3, 4, 4] pixels to 6 features."""
    weights = torch.randn(6, 48, generator=torch.Generator().manual_seed(7))
    return lambda pixels: torch.tanh(pixels.reshape(pixels.shape[0], -1) @ weights.T - 2.0)


def test_noise_statistics_shapes_and_determinism():
    features = toy_pixel_features()
    images = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(8))
    classes = torch.randn(3, 6, generator=torch.Generator().manual_seed(9))
    sigmas = [0.0, 0.02, 0.2]

    def statistics(batch_size, seed=10):
        return noise_statistics(features, images, sigmas, 7, torch.Generator().manual_seed(seed),
                                class_embeddings=classes, batch_size=batch_size)

    first = statistics(16)
    assert first["embedding_shift"].shape == (3, 5) and first["label_agreement"].shape == (3, 5)
    assert first["clean_prediction"].shape == (5,)
    for other in (statistics(16), statistics(5), statistics(1000)):  # same draws whatever the batch
        for name in first:
            np.testing.assert_array_equal(other[name], first[name])
    assert not np.array_equal(statistics(16, seed=11)["embedding_shift"], first["embedding_shift"])
    # No noise: the noisy path is the clean path (same quantisation), so nothing moves.
    np.testing.assert_allclose(first["embedding_shift"][0], 0.0, atol=1e-6)
    np.testing.assert_array_equal(first["label_agreement"][0], 1.0)
    shift = first["embedding_shift"].mean(axis=1)
    assert shift[2] > shift[1] > shift[0]
    assert noise_statistics(features, images, sigmas, 2, torch.Generator())["embedding_shift"].shape == (3, 5)


def test_quantisation_treats_both_paths_alike():
    pixels = torch.tensor([-0.2, 0.0, 0.31, 0.50196, 1.4])
    np.testing.assert_allclose(quantize_pixels(pixels).numpy(), [0.0, 0.0, 79 / 255, 128 / 255, 1.0], atol=1e-7)


def test_detection_report_orients_each_statistic_and_picks_the_best_sigma():
    sigmas = [0.01, 0.1]
    natural = {"embedding_shift": np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]),
               "label_agreement": np.array([[1.0, 1.0, 0.9], [1.0, 0.8, 0.9]])}
    matched = {"embedding_shift": np.array([[0.15, 0.25, 0.05], [0.4, 0.5, 0.6]]),  # separable at sigma 0.1 only
               "label_agreement": np.array([[0.2, 0.3, 0.1], [1.0, 0.9, 1.0]])}  # matched lose their label at 0.01
    report = detection_report(matched, natural, sigmas)
    assert [entry["sigma"] for entry in report["per_sigma"]] == sigmas
    assert report["per_sigma"][1]["embedding_shift"]["auc"] == 1.0
    assert report["per_sigma"][0]["embedding_shift"]["auc"] == pytest.approx(brute_force_auc([0.15, 0.25, 0.05],
                                                                                             [0.1, 0.2, 0.3]))
    assert report["per_sigma"][0]["label_agreement"]["auc"] == 1.0
    assert report["best"]["embedding_shift"]["sigma"] == 0.1 and report["best"]["label_agreement"]["sigma"] == 0.01
    assert report["best"]["embedding_shift"]["tpr_at_fpr"] == 1.0


def test_the_jacobian_of_a_linear_map_has_its_singular_values():
    weights, sources, _ = linear_problem(6, torch.float32)
    values = jacobian_singular_values(linear_features(weights), sources[:2])
    assert values.shape == (2, OUTPUTS)
    for row in values:
        torch.testing.assert_close(row, torch.linalg.svdvals(weights), rtol=1e-5, atol=1e-6)


def test_the_linear_check_is_small_for_a_linear_map_and_large_for_a_curved_one():
    weights, sources, _ = linear_problem(7, torch.float32)
    generator = torch.Generator().manual_seed(12)
    linear = linear_approximation_check(linear_features(weights), sources[:2], 0.1, 20000, generator=generator)
    assert linear.shape == (2,) and (linear < 0.05).all()  # sampling error only, about sqrt(2 D / draws)

    def curved(x):
        return torch.sin(8 * linear_features(weights)(x))

    assert (linear_approximation_check(curved, sources[:2], 0.5, 2000, generator=generator) > 0.5).all()


def test_normalisation_is_inverted():
    mean = torch.tensor([0.48, 0.46, 0.41]).view(1, 3, 1, 1)
    std = torch.tensor([0.27, 0.26, 0.28]).view(1, 3, 1, 1)
    pixels = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(invert_normalization(lambda p: (p - mean) / std, (pixels - mean) / std), pixels)
    with pytest.raises(ValueError, match="affine"):
        invert_normalization(torch.sqrt, pixels)


@pytest.fixture(scope="module")
def tiny_openclip(openclip_model):
    """The session's tiny open_clip module (loaded through its spec string)."""
    return openclip_model.model


@pytest.mark.parametrize("box", ["normalized", "pixel01"])
def test_descent_through_a_tiny_open_clip_image_tower(tiny_openclip, box):
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    pixels = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(13))
    if box == "normalized":
        features, sources = tiny_openclip.encode_image, (pixels - mean) / std
    else:
        features, sources = (lambda p: tiny_openclip.encode_image((p - mean) / std)), pixels
    with torch.no_grad():
        targets = features(sources.roll(1, dims=0))  # each image aims at the next one's embedding
    events = []
    result = match_embeddings(features, sources, targets, box=box, steps=15, lr=1.0 if box == "normalized" else 0.1,
                              callback=record(events))
    start = events[0].distance
    assert (result.distance < start).all()  # gradients flowed and the loss fell for every pair
    assert (result.matched != sources).any(dim=1).all()
    assert all(parameter.grad is None for parameter in tiny_openclip.parameters())
    if box == "pixel01":
        assert result.matched.min() >= 0 and result.matched.max() <= 1
