"""lgip.engine.pixels (pixels through DataLoader workers; forwards of one fixed shape, so a
row's result does not depend on its batch-mates) and lgip.engine.checkpoint (finished
items written and read back bit for bit, keyed by their settings)."""
import time

import numpy as np
import pytest
import torch
from PIL import Image

from lgip.engine.checkpoint import RunCheckpoint, checkpoint_folder
from lgip.engine.pixels import fixed_rows, load_pixels
from lgip.engine.settings import EvalSettings
from lgip.models import load_model
from lgip.tiny import draw_images


@pytest.fixture(scope="module")
def openclip(tiny):
    return load_model(tiny.openclip)


def test_pixels_are_the_models_own_and_a_missing_image_is_reported(openclip, tmp_path):
    paths = draw_images(tmp_path, 3)
    paths.insert(1, str(tmp_path / "missing.jpg"))
    pixels, failures = load_pixels(openclip, paths, EvalSettings(batch_size=2, workers=0, progress=False))
    assert list(failures) == [1] and "missing.jpg" in failures[1]
    assert torch.isnan(pixels[1]).all()
    for row in (0, 2, 3):
        with Image.open(paths[row]) as image:
            expected = openclip.to_pixels(image.convert("RGB"))
        assert torch.equal(pixels[row], expected)
    assert pixels[0].min() >= 0 and pixels[0].max() <= 1


def test_fixed_rows_sees_only_full_batches_and_passes_gradients_to_real_rows():
    weights = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    shapes = []

    def linear(batch):
        shapes.append(tuple(batch.shape))
        return batch.reshape(batch.shape[0], -1) @ weights.T

    padded = fixed_rows(linear, 4)
    x = torch.randn(6, 3, 2, 2, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = padded(x)
    assert shapes == [(4, 3, 2, 2), (4, 3, 2, 2)] and out.shape == (6, 5)
    torch.testing.assert_close(out, linear(x))
    (gradient,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(gradient, weights.sum(0).reshape(1, 3, 2, 2).expand(6, 3, 2, 2))


def test_at_a_fixed_shape_a_row_does_not_depend_on_its_batch_mates(openclip):
    """What bit-exact resumption rests on: the same image, in another row among other
    images, gives the same features to the last bit (batches of one size)."""
    pixels = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    features = fixed_rows(lambda p: openclip.image_features(p, grad=True), 4)
    together = features(pixels)
    alone = torch.cat([features(pixels[i:i + 1]) for i in range(7)])
    shuffled = features(pixels.flip(0)).flip(0)
    assert torch.equal(together, alone) and torch.equal(together, shuffled)


def test_checkpoint_rows_come_back_bit_for_bit(tmp_path):
    settings = {"steps": 10}
    folder, keyed = checkpoint_folder(str(tmp_path / "run"), settings)
    assert folder != checkpoint_folder(str(tmp_path / "run"), {"steps": 11})[0]
    assert folder == checkpoint_folder(str(tmp_path / "run"), {"steps": 10})[0]
    rows = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    rows[2, 3] = np.inf
    checkpoint = RunCheckpoint(folder, keyed, flush_seconds=3600)
    checkpoint.add("records", [4, 0, 9], rows[:3])
    assert not checkpoint.flush(force=False)  # not due yet: nothing written
    assert RunCheckpoint(folder).load("records", [0])[1] is None
    assert checkpoint.flush()
    checkpoint.add("records", [2, 7], rows[3:])
    checkpoint.add("tensors", [4], np.ones((1, 3)))
    checkpoint.flush()
    found, loaded = RunCheckpoint(folder).load("records", range(10))
    assert found.tolist() == [i in (0, 2, 4, 7, 9) for i in range(10)]
    for row, item in enumerate([4, 0, 9, 2, 7]):
        assert loaded[item].tobytes() == rows[row].tobytes()
    assert np.isnan(loaded[1]).all()
    found, tensors = RunCheckpoint(folder).load("tensors", [4, 0])
    assert found.tolist() == [True, False] and tensors[0].tolist() == [1, 1, 1]
    checkpoint.remove()
    assert RunCheckpoint(folder).load("records", [0])[1] is None


def test_a_due_flush_writes_on_its_own(tmp_path):
    checkpoint = RunCheckpoint(str(tmp_path / "run"), flush_seconds=0.01)
    checkpoint.add("records", [1], np.zeros((1, 2)))
    time.sleep(0.02)
    assert checkpoint.flush(force=False)
    assert RunCheckpoint(str(tmp_path / "run")).load("records", [1])[0].all()
