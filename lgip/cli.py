"""What every script's command line shares: the entry point that turns a user's mistake
into one `error:` line and exit code 2 and keeps a closed pipe from costing a file,
argparse types for every number a flag takes, and printing and writing metric files.
Standard library only.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import sys
from typing import Any, Callable, Dict, Sequence

from lgip.io import InputError, RankFailure, write_json


class PipeSafeStream:
    """A text stream (stdout, stderr) whose writes never raise for a reader that went
    away: `script | head -2` must not cost the files the script writes after printing.
    On the first broken pipe the descriptor is pointed at /dev/null (the recipe in
    Python's signal docs), so later writes and the final flush go nowhere quietly."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def _drop_output(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, text):
        if self.broken:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop_output()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop_output()
            with contextlib.suppress(Exception):
                self._stream.flush()  # the buffered rest now goes to /dev/null

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def pipe_safe_output():
    """stdout and stderr as PipeSafeStreams for the block; flushed and restored after.
    A stream Python has not got (None: its descriptor was closed, `>&-`) stays None,
    which print() already ignores."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (None if stream is None else PipeSafeStream(stream) for stream in saved)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = saved


def run_cli(main: Callable[[], Any]) -> None:
    """Run a script's main(); an InputError becomes one `error:` line and exit code 2, a
    RankFailure (a run over several ranks lost one) one `error:` line and exit code 1.
    Printing never fails the run: a closed stdout (`| head`) is ignored and every file
    is still written."""
    with pipe_safe_output():
        try:
            main()
            # Exit without the collector scanning the objects torch, torchvision and open_clip
            # made at import (about 400,000): the interpreter's teardown is then 1 s shorter.
            gc.freeze()
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


def _number_type(kind: type, minimum, what: str) -> Callable[[str], Any]:
    """An argparse type: `kind(text)`, finite, at least `minimum`; `what` names it in
    the messages ("a whole number of at least 1")."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__}_at_least_{minimum}"
    parse.minimum = minimum
    return parse


# Every numeric flag of every script takes one of these (tests check that none takes a
# bare int or float).
positive_int = _number_type(int, 1, "a whole number of at least 1")
nonnegative_int = _number_type(int, 0, "a whole number of at least 0")
positive_float = _number_type(float, math.ulp(0.0), "a finite number above 0")
nonnegative_float = _number_type(float, 0.0, "a finite number of at least 0")
NUMBER_TYPES = (positive_int, nonnegative_int, positive_float, nonnegative_float)


def limit_marker(limit) -> str:
    """What a `--limit N` run adds to the names of the files it writes (`__limitN`), so
    it never replaces the full run's files; "" for a full run (the release's names)."""
    return "" if limit is None else f"__limit{limit}"


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
