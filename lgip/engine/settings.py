"""How the engine runs, as one object: device, precision, batch sizes, workers, cache,
bootstrap, seed, strictness, SigLIP padding, prefix sharing, progress. Scripts build it from their flags
(`EvalSettings.from_args`); benchmarks and other tools build it directly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Optional

from lgip.cli import default_workers

CACHE_FOLDER_NAME = ".lgip_cache"  # the default cache, beside the input


@dataclass(frozen=True)
class EvalSettings:
    """Everything that decides how (not what) a run computes. `cache_dir` None means no
    cache at all; `with_default_cache(input_path)` fills in the default folder."""
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 32  # images per batch
    text_batch_size: int = 256
    workers: int = default_workers()
    cache_dir: Optional[str] = None
    cache_shard_rows: int = 4096
    bootstrap: int = 1000
    seed: int = 0
    strict: bool = False
    siglip_padding: str = "max_length"
    prefix_sharing: bool = True  # where the text tower allows it (causal, end-token pooling)
    progress: bool = True
    limit: Optional[int] = None

    @classmethod
    def from_args(cls, args) -> "EvalSettings":
        """From an evaluation script's parsed flags; the cache defaults to `.lgip_cache`
        beside the input unless --no-cache."""
        settings = cls(device=args.device, precision=args.precision, batch_size=args.batch_size,
                       text_batch_size=args.text_batch_size, workers=args.workers, cache_dir=args.cache_dir,
                       cache_shard_rows=args.cache_shard_rows, bootstrap=args.bootstrap, seed=args.seed,
                       strict=args.strict, siglip_padding=args.siglip_padding,
                       prefix_sharing=not args.no_prefix_sharing, progress=not args.quiet,
                       limit=args.limit)
        if args.no_cache:
            return replace(settings, cache_dir=None)
        return settings if args.cache_dir is not None else settings.with_default_cache(args.input)

    def with_default_cache(self, input_path: str) -> "EvalSettings":
        """These settings with the cache beside `input_path`."""
        return replace(self, cache_dir=os.path.join(os.path.dirname(os.path.abspath(input_path)), CACHE_FOLDER_NAME))
