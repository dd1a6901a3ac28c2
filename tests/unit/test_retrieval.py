"""Retrieval recall@k from unit embeddings (lgip/retrieval.py): a hand-worked case with
ties, and random embeddings against a brute-force ranking, chunked and not."""
import numpy as np
import pytest

from lgip.retrieval import retrieval_recalls


def test_hand_worked_recalls_with_a_tie():
    images = np.eye(2, dtype=np.float32)
    captions = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)  # caption 1 (image 0's) equals caption 0
    owner = np.array([0, 0, 1])
    assert retrieval_recalls(images, captions, owner, ks=(1, 2)) == {
        "image_to_text": {"R@1": 1.0, "R@2": 1.0}, "text_to_image": {"R@1": 1.0, "R@2": 1.0},
        "num_images": 2, "num_captions": 3}
    # Image 1's only caption now scores 0 with both images: image 0's captions tie with it
    # for image 1 (a tie does not rank above), and image 0 beats image 1 for that caption.
    captions = np.array([[1, 0], [1, 0], [1, 0]], dtype=np.float32)
    assert retrieval_recalls(images, captions, owner, ks=(1, 2)) == {
        "image_to_text": {"R@1": 1.0, "R@2": 1.0}, "text_to_image": {"R@1": pytest.approx(2 / 3), "R@2": 1.0},
        "num_images": 2, "num_captions": 3}


def unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("max_chunk_cells", [1 << 22, 7])
def test_recalls_equal_a_brute_force_ranking(max_chunk_cells):
    rng = np.random.default_rng(3)
    per_image = rng.integers(1, 4, size=9)
    owner = np.repeat(np.arange(9), per_image)
    images = unit(rng.normal(size=(9, 6))).astype(np.float32)
    captions = unit(images[owner] + rng.normal(scale=1.2, size=(len(owner), 6))).astype(np.float32)
    similarity = images @ captions.T
    result = retrieval_recalls(images, captions, owner, ks=(1, 3, 5), max_chunk_cells=max_chunk_cells)
    for k in (1, 3, 5):
        i2t = np.mean([np.sum(similarity[i] > similarity[i][owner == i].max()) < k for i in range(9)])
        t2i = np.mean([np.sum(similarity[:, c] > similarity[owner[c], c]) < k for c in range(len(owner))])
        assert result["image_to_text"][f"R@{k}"] == pytest.approx(i2t)
        assert result["text_to_image"][f"R@{k}"] == pytest.approx(t2i)
    assert 0 < result["image_to_text"]["R@1"] < 1 and 0 < result["text_to_image"]["R@1"] < 1  # not trivial
    assert (result["num_images"], result["num_captions"]) == (9, len(owner))


def test_no_captions_no_recalls():
    assert retrieval_recalls(np.eye(2, dtype=np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.int64)) == {}
