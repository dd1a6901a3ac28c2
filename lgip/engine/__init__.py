"""The evaluation engine: settings, the pair plan, the embedding cache, batched encoding,
scores, per-pair dumps and the per-model run loop. This face re-exports what a tool
built on the engine usually needs, loading each submodule on first use, so that
torch-free users (the report reads `plan.split_kind` and `dump.PairDump.COLUMNS`)
import only the submodule they name.
"""
import importlib

# name -> the submodule that defines it
_EXPORTS = {"Caption": "plan", "PairPlan": "plan", "build_plan": "plan", "split_kind": "plan",
            "evaluate_models": "run", "Scores": "scores", "record_ids": "scores", "score_plan": "scores",
            "EvalSettings": "settings"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lgip.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lgip.engine.{_EXPORTS[name]}"), name)
