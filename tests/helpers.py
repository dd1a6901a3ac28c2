"""What the tests share, in one module (test files import it, never each other): the
repository's paths, running a script as a user does, reading JSONL, the plain per-pair
reference encoder the engine's numbers are checked against, and the tiny offline world
(tiny models, drawn images, a base JSONL and the generators' outputs for it).

Nothing here downloads anything: the offline switches are set before transformers or
huggingface_hub is first imported.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import runpy
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

# Tests never reach the network. huggingface_hub reads these when it is first imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
TOL = 1e-5  # float32 embeddings computed two ways agree to about this

GENERATORS = ["diff_gen_caption.py", "make_perturb_with_fliptypes.py", "rebuttal_enhanced_perturb_with_fliptypes.py"]
# The generators the tiny world runs on its base JSONL, and the attribute each output gets.
TINY_GENERATED = list(zip(GENERATORS, ["perturb", "fliptypes", "enhanced"]))
TINY_IMAGES = 16


_ZYGOTE = None  # this process's tests.zygote, started on the first run_script
_ZYGOTE_LOCK = threading.Lock()  # one request at a time on its pipes


def _zygote() -> subprocess.Popen:
    global _ZYGOTE
    if _ZYGOTE is None or _ZYGOTE.poll() is not None:
        _ZYGOTE = subprocess.Popen([sys.executable, "-m", "tests.zygote"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    return _ZYGOTE


def run_script(script, *args, env_extra=None, check=False):
    """Run `python REPO/script args...` and return the CompletedProcess (text mode). The
    script runs in a process forked from tests.zygote (torch and open_clip already
    imported); with `env_extra` (variables read at interpreter start, such as
    PYTHONHASHSEED) it runs in a fresh interpreter instead."""
    command = [sys.executable, str(REPO / script), *map(str, args)]
    env = dict(os.environ)
    env.update(env_extra or {})
    if env_extra:
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(REPO))
    else:
        result = _run_in_zygote(command, env)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _run_in_zygote(command, env) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="run_script_") as folder:
        stdout, stderr = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        with _ZYGOTE_LOCK:
            zygote = _zygote()
            zygote.stdin.write(json.dumps({"script": command[1], "argv": command[2:], "env": env, "cwd": str(REPO),
                                           "stdout": stdout, "stderr": stderr}) + "\n")
            zygote.stdin.flush()
            answer = zygote.stdout.readline()
        if not answer:
            raise RuntimeError("tests.zygote died; run the script by hand to see why")

        def text(path):  # as subprocess.run(text=True) decodes: universal newlines
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()

        return subprocess.CompletedProcess(command, int(answer), text(stdout), text(stderr))


def read_jsonl(path):
    """The records of a JSONL file, blank lines skipped."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path, records) -> Path:
    """Write `records` one JSON object a line; returns the path."""
    path = Path(path)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def word_counts(text):
    """The lower-case tokens of a caption, as a multiset (what a swap must keep)."""
    from lgip.perturb.tagger import caption_tokens

    return Counter(token.lower() for token, _start, _end in caption_tokens(text))


def write_records(path, image_paths: Sequence[str], captions_per_image: int = 5, seed: int = 0) -> str:
    """Write a base JSONL at `path`, one record per image: image_id (its index),
    file_name, image_path (relative to the JSONL's folder) and orig_captions (distinct
    captions drawn from CAPTIONS, fixed by `seed`). Returns the path."""
    from lgip.tiny import CAPTIONS

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i, image_path in enumerate(image_paths):
            record = {
                "image_id": i,
                "file_name": os.path.basename(image_path),
                "image_path": Path(os.path.relpath(Path(image_path).resolve(), base)).as_posix(),
                "orig_captions": rng.sample(CAPTIONS, captions_per_image),
            }
            handle.write(json.dumps(record) + "\n")
    return str(path)


def build_tiny_models(root) -> SimpleNamespace:
    """Tiny offline models under `root`: an open_clip CLIP saved as a `local-dir:` folder
    (`openclip`, its spec), a SigLIP saved with save_pretrained (`siglip`, its spec), and
    16 drawn images (`images`, their paths)."""
    from lgip.tiny import CAPTIONS, build_tiny_openclip, build_tiny_siglip, draw_images

    root = Path(root)
    return SimpleNamespace(root=root, openclip=build_tiny_openclip(root / "openclip"),
                           siglip=build_tiny_siglip(root / "siglip", CAPTIONS),
                           images=draw_images(root / "data" / "images", TINY_IMAGES))


def build_tiny_world(models: SimpleNamespace) -> SimpleNamespace:
    """The tiny models plus data beside their images: a base JSONL (`base`) and the
    three generators' outputs for it (`perturb`, `fliptypes`, `enhanced`), each made by
    running the script as a user does."""
    world = SimpleNamespace(**vars(models))
    data = Path(models.root) / "data"
    world.base = Path(write_records(data / "base.jsonl", models.images))
    for script, name in TINY_GENERATED:
        output = data / f"base_{name}.jsonl"
        run_script(script, "--input", world.base, "--output", output, check=True)
        setattr(world, name, output)
    return world


# --- the plain reference: one image, one text at a time, loops over pairs ------------

class PlainEncoder:
    """Encodes one image or one text per call, straight through the libraries, the way
    a reader would check a number by hand. `longest` mimics the release's SigLIP calls
    (padding to the longest text of the texts encoded together)."""

    def __init__(self, spec):
        self.kind, self.name = spec.split(":", 1)
        if self.kind == "openclip":
            import open_clip
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(self.name)
            self.tokenizer = open_clip.get_tokenizer(self.name)
        else:
            from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
            self.model = AutoModel.from_pretrained(self.name)
            self.tokenizer = AutoTokenizer.from_pretrained(self.name)
            self.processor = AutoImageProcessor.from_pretrained(self.name)
        self.model.eval()

    @staticmethod
    def _unit(features):
        features = features if torch.is_tensor(features) else features.pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def image(self, path):
        from PIL import Image
        image = Image.open(path).convert("RGB")
        if self.kind == "openclip":
            return self._unit(self.model.encode_image(self.preprocess(image)[None]))[0]
        return self._unit(self.model.get_image_features(**self.processor(images=image, return_tensors="pt")))[0]

    @torch.no_grad()
    def texts(self, texts, longest=False):
        if self.kind == "openclip":
            return self._unit(self.model.encode_text(self.tokenizer(texts)))
        if longest:
            inputs = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            return self._unit(self.model.get_text_features(**inputs))
        rows = [self.tokenizer([t], padding="max_length", max_length=64, truncation=True, return_tensors="pt")
                for t in texts]
        return torch.cat([self._unit(self.model.get_text_features(**row)) for row in rows])


def plain_lgip(spec, jsonl, longest=False):
    """The release's metrics computed pair by pair."""
    encoder = PlainEncoder(spec)
    folder = os.path.dirname(jsonl)
    invariance, gaps = [], []
    for record in read_jsonl(jsonl):
        image = encoder.image(os.path.join(folder, record["image_path"]))
        captions = encoder.texts(record["orig_captions"], longest)
        for index, caption in enumerate(captions):
            base = float(image @ caption)
            for key, sink in [("same_caps", invariance), ("diff_caps", gaps)]:
                texts = record[key][str(index)]
                if texts:
                    for variant in encoder.texts(texts, longest):
                        score = float(image @ variant)
                        sink.append(abs(base - score) if key == "same_caps" else base - score)
    return {"invariance_error_mean": np.mean(invariance), "sensitivity_gap_mean": np.mean(gaps),
            "sensitivity_pos_rate": np.mean(np.array(gaps) > 0), "num_invariance_pairs": len(invariance),
            "num_sensitivity_pairs": len(gaps)}


# --- running the evaluation scripts ---------------------------------------------------

def run_multi(tiny, spec, out, *extra, input_path=None):
    """run_lgip_multi.py on the tiny world's perturbed file (or `input_path`) for one
    model into `out`; returns (its metric dict, the CompletedProcess)."""
    from lgip.models import parse_spec

    result = run_script("run_lgip_multi.py", "--input", input_path or tiny.perturb, "--models", spec,
                        "--output-dir", out, "--quiet", "--bootstrap", 200, *extra)
    assert result.returncode == 0, result.stderr
    stem = os.path.splitext(os.path.basename(input_path or tiny.perturb))[0]
    tag = parse_spec(spec).tag
    return json.load(open(Path(out) / f"{stem}__LGIP_{tag}.metrics.json")), result


def without_timings(metrics):
    """A metric dict (or list of them) without the fields that differ run to run."""
    metrics = json.loads(json.dumps(metrics))
    for entry in metrics if isinstance(metrics, list) else [metrics]:
        entry["config"].pop("timings_seconds")
        entry["config"].pop("cache")
    return metrics


def cache_files(cache, kind):
    """The cache's shard files of one kind (images or texts), sorted."""
    return sorted(p for p in Path(cache).rglob(f"{kind}-*.npz"))


# --- running a script in the test process (runpy), as `python script.py ARGS` runs it --------
# torch is imported once for many runs, and a test can make loading a model fail, to prove
# that a refusal came before any encoding (the output and flag tests).

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
    import lgip.engine.warm
    import lgip.models

    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", [str(REPO / script), *map(str, args)])
        if refuse_loading:
            def loading(*_args, **_kwargs):
                raise AssertionError(f"{script} {args}: a model was loaded before the refusal")
            patch.setattr(lgip.engine.warm, "load_model", loading)  # the engine's run loop loads through warm.py
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
    # python -m tests.helpers '[["script.py", "arg", ...], ...]': run_many's results as JSON,
    # for tests that must run scripts in another process (a private mount namespace).
    print(json.dumps(run_many(json.loads(sys.argv[1]))))
