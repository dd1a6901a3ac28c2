"""Standard image<->text retrieval recall@k over a set of images and their captions,
computed in chunks from unit embeddings (numpy only), so memory stays bounded.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np

RETRIEVAL_KS = (1, 5, 10)


def retrieval_recalls(image_embeddings, caption_embeddings, caption_owner, ks: Sequence[int] = RETRIEVAL_KS,
                      max_chunk_cells: int = 1 << 22) -> Dict[str, Any]:
    """Image->text recall@k (a hit when any of the image's captions ranks in the top k)
    and text->image recall@k (a hit when the caption's own image does), for unit
    embeddings of images [I, D] and captions [C, D], `caption_owner[c]` the image of
    caption c (ascending: an image's captions are contiguous). A candidate counts above
    the ground truth only when it scores strictly higher."""
    if not len(caption_embeddings):
        return {}
    first_caption = np.searchsorted(caption_owner, np.arange(len(image_embeddings)))

    def ranks(queries, candidates, truth_of):
        """How many candidates score strictly above each query's ground truth, the truth
        read from the same similarity matrix (so a candidate never beats itself)."""
        out = np.empty(len(queries), dtype=np.int64)
        step = max(1, max_chunk_cells // max(1, len(candidates)))
        for start in range(0, len(queries), step):
            similarity = queries[start:start + step] @ candidates.T
            truth = truth_of(similarity, np.arange(start, start + len(similarity)))
            out[start:start + step] = (similarity > truth[:, None]).sum(axis=1)
        return out

    def best_own_caption(similarity, images):
        per_image = np.maximum.reduceat(similarity, first_caption, axis=1)
        return per_image[np.arange(len(images)), images]

    def own_image(similarity, captions):
        return similarity[np.arange(len(captions)), caption_owner[captions]]

    image_ranks = ranks(image_embeddings, caption_embeddings, best_own_caption)
    text_ranks = ranks(caption_embeddings, image_embeddings, own_image)
    return {
        "image_to_text": {f"R@{k}": float((image_ranks < k).mean()) for k in ks},
        "text_to_image": {f"R@{k}": float((text_ranks < k).mean()) for k in ks},
        "num_images": int(len(image_embeddings)), "num_captions": int(len(caption_embeddings)),
    }
