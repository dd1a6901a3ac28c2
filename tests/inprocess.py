"""Running a script in the test process, as `python script.py ARGS` runs it (runpy, with
its `__main__` block): torch is imported once for many runs, and a test can make
loading a model fail, to prove that a refusal came before any encoding. For the output
and flag tests; to be folded into tests/helpers.py with the other shared helpers.
"""
import argparse
import hashlib
import runpy
import sys
from pathlib import Path

from tests.helpers import REPO


class _Captured(Exception):
    pass


def script_parser(script, monkeypatch):
    """The script's argparse parser, taken as its main() hands it the command line."""
    captured = {}

    def capture(self, args=None, namespace=None):
        captured["parser"] = self
        raise _Captured

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        patch.setattr(sys, "argv", [str(REPO / script)])
        try:
            runpy.run_path(str(REPO / script), run_name="__main__")
        except _Captured:
            return captured["parser"]
    raise AssertionError(f"{script} never parsed its command line")


def run_here(script, args, monkeypatch, capsys, refuse_loading=False):
    """(exit code, stdout, stderr) of `python script args...`, run in this process.
    With `refuse_loading`, loading a model raises, so a refusal that came after it fails
    the test. Any exception but SystemExit propagates: a traceback fails the test."""
    import lgip.engine.run
    import lgip.models

    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", [str(REPO / script), *map(str, args)])
        if refuse_loading:
            def loading(*_args, **_kwargs):
                raise AssertionError(f"{script} {args}: a model was loaded before the refusal")
            patch.setattr(lgip.engine.run, "load_model", loading)  # the engine's run loop
            patch.setattr(lgip.models, "load_model", loading)  # scripts that load models themselves
        try:
            runpy.run_path(str(REPO / script), run_name="__main__")
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def error_lines(text):
    """The lines of a run's stderr that report an error."""
    return [line for line in text.splitlines() if "error:" in line]


def digest(paths):
    """sha256 of each file (a folder: of each file inside it), to show none changed."""
    result = {}
    for path in map(Path, paths):
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                result[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return result


def run_many(commands):
    """[(exit code, stderr)] of each `[script, arg, ...]` in `commands`, run one after
    the other in this process (so torch is imported once), stdout discarded."""
    import contextlib
    import io

    results = []
    for script, *args in commands:
        stderr = io.StringIO()
        sys.argv = [str(REPO / script), *args]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            try:
                runpy.run_path(str(REPO / script), run_name="__main__")
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        results.append((code, stderr.getvalue()))
    return results


if __name__ == "__main__":
    # python -m tests.inprocess '[["script.py", "arg", ...], ...]': run_many's results as JSON,
    # for tests that must run scripts in another process (a private mount namespace).
    import json

    print(json.dumps(run_many(json.loads(sys.argv[1]))))
