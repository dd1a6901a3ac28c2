"""lgip.probes.systematic: the seeded pairs, the gradient check, and the property resumed
and sharded runs rest on: a pair's record is the same to the last bit whichever other
pairs run with it, in whatever order (tiny open_clip and tiny SigLIP)."""
import numpy as np
import pytest
import torch

from lgip.engine.checkpoint import RunCheckpoint
from lgip.io import InputError
from lgip.models import load_model
from lgip.probes.systematic import (RECORD_FIELDS, RECORDS, TENSORS, MatchingOptions, PairRecords, PairRunner,
                                    box_path, choose_pairs, natural_statistics, noise_generator,
                                    require_image_gradients)

LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the tiny towers gain nothing from more, and on a shared
    machine threads that wait on each other make these descents many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pairs_take_k_sources_per_class_and_a_target_from_every_other_class():
    pairs = choose_pairs(LABELS, 3, 2, seed=0)
    labels = np.asarray(LABELS)
    assert len(pairs) == 3 * 2 * 2
    for c in range(3):
        sources = pairs.source[labels[pairs.source] == c]
        assert len(set(sources.tolist())) == 2  # two distinct sources of class c
        for source in set(sources.tolist()):
            targets = pairs.target[pairs.source == source]
            assert sorted(labels[targets].tolist()) == [d for d in range(3) if d != c]
    assert [labels[s] for s in pairs.source] == sorted(labels[pairs.source].tolist())  # grouped by class, in order
    again = choose_pairs(LABELS, 3, 2, seed=0)
    assert np.array_equal(again.source, pairs.source) and np.array_equal(again.target, pairs.target)
    others = [choose_pairs(LABELS, 3, 2, seed=seed) for seed in range(1, 6)]
    assert any(not np.array_equal(other.source, pairs.source) or not np.array_equal(other.target, pairs.target)
               for other in others)


def test_a_class_draws_its_pairs_from_its_own_stream():
    before = choose_pairs(LABELS, 3, 1, seed=4)
    after = choose_pairs(LABELS + [1, 1], 3, 1, seed=4)  # class 1 gains two images
    assert before.source[0] == after.source[0]  # class 0 picks the same source
    assert choose_pairs(LABELS, 3, 5, seed=0).source.tolist().count(3) == 2  # K above a class's size: all of it
    with pytest.raises(ValueError, match="no image"):
        choose_pairs([0, 0, 2], 3, 1, seed=0)


def test_noise_generators_differ_by_stream_and_image_and_repeat():
    draw = lambda *key: torch.randn(3, generator=noise_generator(*key))  # noqa: E731
    assert torch.equal(draw(0, 1, 5), draw(0, 1, 5))
    assert not torch.equal(draw(0, 1, 5), draw(0, 2, 5)) and not torch.equal(draw(0, 1, 5), draw(0, 1, 6))


@pytest.fixture(scope="module", params=["openclip", "siglip"])
def model(request, tiny):
    return load_model(getattr(tiny, request.param))


def test_the_gradient_check_passes_both_backends_and_refuses_a_detached_tower(model):
    require_image_gradients(model)
    tower = model.image_tower
    model.image_tower = lambda normalized: tower(normalized).detach()
    try:
        with pytest.raises(InputError, match="no gradients"):
            require_image_gradients(model)
    finally:
        del model.image_tower


def run_pairs(model, options, order, folder, keep=()):
    """Records (and kept tensors) of 5 pairs of random images, run in `order` (a list of
    lists of pair ids, one runner.run call each)."""
    generator = torch.Generator().manual_seed(3)
    sources = torch.rand(3, 3, 32, 32, generator=generator)
    targets = model.image_features(torch.rand(5, 3, 32, 32, generator=generator)).detach().cpu()
    classes = torch.nn.functional.normalize(torch.randn(4, targets.shape[1], generator=generator), dim=1)
    checkpoint = RunCheckpoint(str(folder))
    runner = PairRunner(model, options, sources, np.array([0, 1, 2, 0, 1]), targets, classes, checkpoint, keep,
                        progress=False)
    for ids in order:
        runner.run(ids)
    found, rows = checkpoint.load(RECORDS, range(5))
    assert found.all()
    return rows, checkpoint.load(TENSORS, keep)[1] if keep else None, runner, sources


@pytest.mark.parametrize("box,optimizer", [("normalized", "sgd"), ("pixel01", "adam")])
def test_a_pairs_record_does_not_depend_on_the_others(model, box, optimizer, tmp_path):
    options = MatchingOptions(box=box, optimizer=optimizer, steps=6, lr=0.5 if box == "normalized" else 0.01,
                              loss_threshold=1e-3, cos_threshold=0.9, eps_linf=0.2, pair_batch_size=2,
                              noise_sigmas=(0.02, 0.1), noise_draws=2, seed=1)
    together, kept, runner, sources = run_pairs(model, options, [[0, 1, 2, 3, 4]], tmp_path / "a", keep=[0, 3])
    split, kept_split, _, _ = run_pairs(model, options, [[4, 2], [3], [1, 0]], tmp_path / "b", keep=[0, 3])
    assert together.tobytes() == split.tobytes() and kept.tobytes() == kept_split.tobytes()
    records = PairRecords(together, 2)
    assert records.shift.shape == (2, 5) and records.agreement.shape == (2, 5)
    assert (records.field("steps") <= 6).all() and set(records.field("converged").tolist()) <= {0.0, 1.0}
    assert ((0 <= records.agreement) & (records.agreement <= 1)).all() and (records.shift >= 0).all()
    # The kept tensors are the matched images: their change is the recorded L-infinity.
    matched01 = runner.path.to_pixels01(torch.from_numpy(kept).reshape(2, 3, 32, 32).to(model.device)).cpu()
    change = (matched01 - sources[[0, 0]]).abs().flatten(1).amax(1)
    np.testing.assert_allclose(change.numpy(), records.field("linf")[[0, 3]], rtol=1e-6)
    assert len(RECORD_FIELDS) + 4 == together.shape[1]


def test_natural_statistics_have_one_column_per_image(model):
    options = MatchingOptions(noise_sigmas=(0.05,), noise_draws=2, pair_batch_size=2)
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    classes = torch.nn.functional.normalize(torch.randn(4, model.image_features(pixels[:1]).shape[1]), dim=1)
    first = natural_statistics(model, pixels, [0, 1, 2], classes, options)
    alone = natural_statistics(model, pixels[2:], [2], classes, options)
    assert first["embedding_shift"].shape == (1, 3)
    assert first["embedding_shift"][:, 2].tobytes() == alone["embedding_shift"][:, 0].tobytes()


def test_the_box_paths_go_there_and_back(model):
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for box in ("normalized", "pixel01"):
        path = box_path(model, box)
        torch.testing.assert_close(path.to_pixels01(path.to_box(pixels)), pixels, rtol=0, atol=1e-6)
        torch.testing.assert_close(path.features(path.to_box(pixels)), model.image_features(pixels))
