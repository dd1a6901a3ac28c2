"""The evaluation engine: settings, the pair plan, the embedding cache, batched encoding,
scores, per-pair dumps and the per-model run loop. Import from the submodules; this face
re-exports what a tool built on the engine usually needs.
"""
from lgip.engine.plan import Caption, PairPlan, build_plan, split_kind
from lgip.engine.run import evaluate_models
from lgip.engine.scores import Scores, record_ids, score_plan
from lgip.engine.settings import EvalSettings

__all__ = ["Caption", "EvalSettings", "PairPlan", "Scores", "build_plan", "evaluate_models", "record_ids",
           "score_plan", "split_kind"]
