"""What every script's command line shares: the entry point that turns a user's mistake
into one `error:` line and exit code 2, argparse types for counts, and printing and
writing metric files. Standard library only.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, Sequence

from lgip.io import InputError, RankFailure, write_json


def run_cli(main: Callable[[], Any]) -> None:
    """Run a script's main(); an InputError becomes one `error:` line and exit code 2, a
    RankFailure (a run over several ranks lost one) one `error:` line and exit code 1."""
    try:
        main()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RankFailure as err:
        print(f"error: {err}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # A process group that lost a peer cannot be torn down cleanly (its threads can
        # abort the interpreter's exit with a second message): leave at once.
        os._exit(1)
    except KeyboardInterrupt:
        print("interrupted: no partial output was written", file=sys.stderr)
        sys.exit(130)


def positive_int(text: str) -> int:
    """argparse type for --limit and the like."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def default_workers() -> int:
    """DataLoader workers: the CPU count, at most 8 (decoding JPEGs rarely needs more)."""
    return max(1, min(8, os.cpu_count() or 1))


def metric_value(metrics: Dict[str, Any], name: str) -> Any:
    """`metrics[name]`, or for a dotted name as the intervals use (`triples.brittleness`)
    the nested value; None when absent."""
    if name in metrics:
        return metrics[name]
    value: Any = metrics
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def print_metrics(metrics: Dict[str, Any], keys: Sequence[str]) -> None:
    """The headline numbers of one model (top-level or dotted names), with their
    intervals, as a few lines."""
    print(f"\n=== {metrics['model_tag']} ({metrics['num_samples']} images) ===")
    intervals = metrics.get("ci95", {})
    for key in keys:
        value = metric_value(metrics, key)
        interval = intervals.get(key)
        shown = "None" if value is None else f"{value:.6f}"
        if interval:
            shown += f"  [95% CI {interval[0]:.6f}, {interval[1]:.6f}]"
        print(f"  {key}: {shown}")
    timings = metrics["config"]["timings_seconds"]
    print("  seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items()))


def write_metric_file(path: str, payload: Any) -> None:
    """Write a metric JSON atomically and say where it went (and whether it replaced one)."""
    replaced = os.path.exists(path)
    write_json(path, payload)
    print(f"{'replaced' if replaced else 'wrote'} {path}")
