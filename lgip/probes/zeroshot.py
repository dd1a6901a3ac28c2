"""Zero-shot classification with a dual encoder, the setting both labelled-image probes
start from: class embeddings from prompt templates (several templates are averaged and
re-normalised, as CLIP's zero-shot ensembles do), predictions by the highest cosine.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence

import numpy as np

from lgip.engine.distributed import SOLO, Dist
from lgip.engine.embed import embed_texts
from lgip.engine.settings import EvalSettings
from lgip.labelled import fill_template

if TYPE_CHECKING:  # torch is imported once a model is loaded, not to check the flags
    from lgip.models.base import VisionLanguageModel


def fill_templates(classnames: Sequence[str], templates: Sequence[str]) -> List[str]:
    """Every template filled with every class name: class-major, templates in order."""
    return [fill_template(template, name) for name in classnames for template in templates]


def average_prompts(prompt_embeddings: np.ndarray, num_classes: int) -> np.ndarray:
    """[C*T, D] unit prompt embeddings (class-major) -> [C, D] unit class embeddings: the
    mean over each class's templates, re-normalised."""
    per_class = prompt_embeddings.reshape(num_classes, -1, prompt_embeddings.shape[1]).astype(np.float64).mean(axis=1)
    return (per_class / np.linalg.norm(per_class, axis=1, keepdims=True)).astype(np.float32)


def class_embeddings(model: VisionLanguageModel, classnames: Sequence[str], templates: Sequence[str],
                     settings: EvalSettings, dist: Dist = SOLO) -> Optional[np.ndarray]:
    """[C, D] unit class embeddings of `classnames` under `templates`, the prompts encoded
    through the embedding cache (a rerun encodes nothing). Under several ranks they
    share the prompts and only the main rank gets the embeddings (None elsewhere)."""
    prompts = fill_templates(classnames, templates)
    distinct, inverse = np.unique(np.asarray(prompts, dtype=object), return_inverse=True)
    embeddings = embed_texts(model, list(distinct), settings, dist)
    return None if embeddings is None else average_prompts(embeddings[inverse], len(classnames))


def predict(image_embeddings: np.ndarray, class_embeddings_: np.ndarray) -> np.ndarray:
    """The index of the best-scoring class for each unit image embedding."""
    return np.argmax(image_embeddings @ class_embeddings_.T, axis=1)
