"""Every script, every output flag pointed at each thing a user might give by mistake or
on purpose (a symlink, a device, a folder, a path under a regular file, a place nothing
can be written in, one of the script's own inputs), and every number flag at 0 and -1:
each run ends with exit 0 and the right result or exit 2 and one `error:` line, never a
traceback, never a changed input, never a replaced link or device, and a refusal comes
before any model is loaded (so before any encoding).

The scripts run in this process (runpy, as `python script.py` runs them), so torch is
imported once for the whole matrix; the runs that must succeed use the session's tiny
models on two-record inputs. A new script, or a new flag of a script, must be added to
the tables below: `test_every_flag_of_every_script_is_in_the_tables` fails until it is.
"""
import json
import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from lgip.cli import NUMBER_TYPES
from tests.helpers import REPO, digest, error_lines, run_here, script_parser

UNWRITABLE = "/proc/lgip-fuzz"  # /proc refuses new files to every user, root included (chmod does not stop root)

# script -> {output flag: "file" or "folder"}; build_base_jsonl.py's --images is an output with --download.
OUTPUT_FLAGS = {
    "run_lgip_multi.py": {"--output-dir": "folder", "--dump-pairs": "file", "--cache-dir": "folder"},
    "run_lgip_by_fliptype.py": {"--output-dir": "folder", "--dump-pairs": "file", "--cache-dir": "folder"},
    "rebuttal_enhanced_lgip_by_transformation.py": {"--output-dir": "folder", "--dump-pairs": "file",
                                                    "--cache-dir": "folder"},
    "run_compositional.py": {"--output-dir": "folder", "--dump-pairs": "file", "--cache-dir": "folder"},
    "diff_gen_caption.py": {"--output": "file"},
    "make_perturb_with_fliptypes.py": {"--output": "file"},
    "rebuttal_enhanced_perturb_with_fliptypes.py": {"--output": "file"},
    "make_compositional_perturb.py": {"--output": "file"},
    "build_base_jsonl.py": {"--output": "file", "--images": "folder"},
    "lgip_report.py": {"--csv": "file", "--plot-frontier": "file", "--plot-types": "file", "--plot-certified": "file",
                       "--html": "file"},
    "lgip_quickstart.py": {"--output-dir": "folder"},
    "siglip_sanity_check.py": {},
    "run_semantic_certification.py": {"--output-dir": "folder", "--dump-intervals": "file", "--cache-dir": "folder"},
    "run_embedding_matching.py": {"--output-dir": "folder", "--cache-dir": "folder"},
}
EVALUATION = ["run_lgip_multi.py", "run_lgip_by_fliptype.py", "rebuttal_enhanced_lgip_by_transformation.py",
              "run_compositional.py", "run_semantic_certification.py", "run_embedding_matching.py"]
GENERATORS = ["diff_gen_caption.py", "make_perturb_with_fliptypes.py", "rebuttal_enhanced_perturb_with_fliptypes.py",
              "make_compositional_perturb.py"]
EVALUATION_NUMBERS = ["--limit", "--batch-size", "--text-batch-size", "--workers", "--cache-shard-rows", "--bootstrap",
                      "--seed", "--dist-timeout"]
NUMBER_FLAGS = {
    **{script: EVALUATION_NUMBERS for script in EVALUATION},
    **{script: ["--seed", "--limit"] for script in GENERATORS},
    "make_compositional_perturb.py": ["--seed", "--limit", "--redraws", "--max-words"],
    "build_base_jsonl.py": ["--n", "--seed", "--workers", "--retries", "--retry-delay", "--timeout"],
    "siglip_sanity_check.py": ["--num-examples", "--max-flips", "--seed"],
    "lgip_quickstart.py": ["--n-images", "--seed"],
    "lgip_report.py": ["--examples"],
    "run_semantic_certification.py": EVALUATION_NUMBERS + ["--budgets", "--nearest"],
    "run_embedding_matching.py": EVALUATION_NUMBERS + ["--sources-per-class", "--steps", "--lr", "--eps-linf",
                                                       "--loss-threshold", "--cos-threshold", "--noise-sigmas",
                                                       "--noise-draws", "--pair-batch-size", "--jacobian", "--examples",
                                                       "--checkpoint-seconds"],
}
# Flags that are neither outputs nor numbers (inputs, choices, switches, model specs).
OTHER_FLAGS = {"--help", "--input", "--models", "--model", "--device", "--precision", "--siglip-padding", "--no-cache",
               "--strict", "--quiet", "--overwrite", "--rules", "--tagger", "--captions", "--absolute-paths",
               "--download", "--check-images", "--labels", "--diff", "--correlate", "--compare-padding",
               "--pairs", "--classnames", "--templates", "--edits", "--transform", "--optimizer", "--box",
               "--normalize-features", "--keep-checkpoint", "--shard-models", "--merge-only", "--no-prefix-sharing"}
# A successful lgip_quickstart.py run takes a minute (it builds two models and runs every
# stage): its accepted numbers are checked by parsing, its outputs' refusals by running,
# and a full run has its own test (test_report's quickstart test).
PARSE_ONLY = {"lgip_quickstart.py"}
KINDS = {"file": ["symlink", "device", "folder", "under_file", "unwritable", "input"],
         "folder": ["symlink", "device", "file", "under_file", "unwritable", "input"]}
SUCCEEDS = {"symlink"}  # for a file flag also "device": it is written in place


# --- the world the matrix runs in -------------------------------------------------------

def first_records(source, destination, count=2):
    """The first `count` records of a tiny-world JSONL, image paths made absolute."""
    lines = [json.loads(line) for line in Path(source).read_text().splitlines() if line.strip()][:count]
    for record in lines:
        record["image_path"] = str((Path(source).parent / record["image_path"]).resolve())
    destination.write_text("".join(json.dumps(record) + "\n" for record in lines))
    return destination


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    """Two-record inputs for every script, a COCO captions file, two metric files for
    the report, and a cache shared by the runs that do not test --cache-dir."""
    from lgip_quickstart import write_coco_captions

    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    data.mkdir()
    files = {name: first_records(getattr(tiny, name), data / f"{name}.jsonl") for name in
             ("base", "perturb", "fliptypes", "enhanced")}
    compositional = data / "compositional.jsonl"
    code = os.system(f"{sys.executable} {REPO / 'make_compositional_perturb.py'} --input {files['enhanced']} "
                     f"--output {compositional} > /dev/null")
    assert code == 0
    files["compositional"] = compositional
    files["captions"] = data / "captions.json"
    images = sorted(Path(tiny.images[0]).parent.glob("*.jpg"))[:4]
    write_coco_captions(str(files["captions"]), [str(path) for path in images], 6, 0)
    coco = json.loads(files["captions"].read_text())
    for image, path in zip(coco["images"], images):  # --download fetches file:// URLs offline
        image["file_name"], image["coco_url"] = path.name, path.as_uri()
    files["captions"].write_text(json.dumps(coco))
    metrics = data / "m__LGIP_tiny.metrics.json"
    metrics.write_text(json.dumps({"model_tag": "tiny", "num_samples": 2, "invariance_error_mean": 0.1,
                                   "sensitivity_gap_mean": 0.02, "sensitivity_pos_rate": 0.6,
                                   "ci95": {"invariance_error_mean": [0.05, 0.15]},
                                   "config": {"script": "run_lgip_multi.py", "spec": "hf:x", "input": "p.jsonl"}}))
    typed = data / "t__LGIP_fliptypes.metrics.json"
    typed.write_text(json.dumps([{"model_tag": "tiny", "num_samples": 2, "invariance_error_mean": 0.1,
                                  "global_sensitivity": {"gap_mean": 0.02, "pos_rate": 0.6, "count": 9},
                                  "by_flip_type": {"color": {"gap_mean": 0.01, "pos_rate": 0.5, "count": 4}},
                                  "config": {"script": "run_lgip_by_fliptype.py", "spec": "hf:x", "input": "f.jsonl"}}]))
    certified = data / "c__CERTIFY_tiny.metrics.json"
    certified.write_text(json.dumps({"model_tag": "tiny", "num_samples": 4, "zero_shot_accuracy": 0.5,
                                     "transform": "rotate", "by_budget": {"0": {
                                         "mean_certified_extent": 0.3, "share_fully_certified": 0.25, "families": {
                                             "size": {"mean_certified_extent": 0.3,
                                                      "certified_accuracy": {"0.1": 0.5, "0.5": 0.25}}}}},
                                     "config": {"script": "run_semantic_certification.py", "input": "l.jsonl"}}))
    labelled = data / "labelled.jsonl"  # two classes of two images, for the certification script
    labelled.write_text("".join(json.dumps({"image_path": str(path), "label": label}) + "\n"
                                for path, label in zip(images, ["cat", "cat", "dog", "dog"])))
    edits = data / "edits.json"
    edits.write_text(json.dumps({"size": ["a photo of a small {}"]}))
    files.update(metrics=metrics, typed_metrics=typed, certified_metrics=certified, labelled=labelled, edits=edits)
    return {"root": root, "files": files, "cache": root / "shared_cache", "openclip": tiny.openclip}


def base_arguments(script, world, out):
    """(arguments of a run that succeeds, its input files) for `script`, outputs in `out`."""
    files = world["files"]
    if script == "run_semantic_certification.py":
        return (["--input", files["labelled"], "--edits", files["edits"], "--models", world["openclip"],
                 "--output-dir", out, "--cache-dir", world["cache"], "--workers", 0, "--bootstrap", 20, "--seed", 1,
                 "--budgets", 0.01, "--quiet"], [files["labelled"], files["edits"]])
    if script == "run_embedding_matching.py":
        return (["--input", files["labelled"], "--models", world["openclip"], "--output-dir", out, "--cache-dir",
                 world["cache"], "--workers", 0, "--bootstrap", 20, "--seed", 1, "--steps", 2, "--noise-draws", 1,
                 "--noise-sigmas", 0.01, "--sources-per-class", 1, "--examples", 0, "--pair-batch-size", 2, "--quiet"],
                [files["labelled"]])
    if script in EVALUATION:
        data = {"run_lgip_multi.py": "perturb", "run_lgip_by_fliptype.py": "fliptypes",
                "rebuttal_enhanced_lgip_by_transformation.py": "enhanced",
                "run_compositional.py": "compositional"}[script]
        return (["--input", files[data], "--models", world["openclip"], "--output-dir", out, "--cache-dir",
                 world["cache"], "--workers", 0, "--bootstrap", 20, "--seed", 1, "--quiet"], [files[data]])
    if script in GENERATORS:
        source = files["enhanced"] if script == "make_compositional_perturb.py" else files["base"]
        return ["--input", source, "--output", out / "generated.jsonl"], [source]
    if script == "build_base_jsonl.py":
        return (["--captions", files["captions"], "--images", Path(files["base"]).parent, "--output",
                 out / "base.jsonl", "--n", 2], [files["captions"]])
    if script == "lgip_report.py":
        reports = [files["metrics"], files["typed_metrics"], files["certified_metrics"]]
        return ([*reports, "--csv", out / "table.csv", "--plot-frontier", out / "frontier.png", "--plot-types",
                 out / "types.png"], reports)
    if script == "siglip_sanity_check.py":
        return (["--input", files["perturb"], "--model", world["openclip"], "--num-examples", 1, "--device", "cpu"],
                [files["perturb"]])
    if script == "lgip_quickstart.py":
        return ["--output-dir", out / "quickstart"], []
    raise AssertionError(f"no base arguments for {script}")


def with_flag(args, flag, value):
    """`args` with `flag` set to `value` (replaced where present, else added)."""
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def make_device(path):
    """A private character device like /dev/null (root may make one), else a FIFO with
    a reader draining it; returns (checker of its kind, reader thread or None)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        return stat.S_ISCHR, None
    except OSError:
        os.mkfifo(path)
        reader = threading.Thread(target=lambda: open(path, "rb").read(), daemon=True)
        reader.start()
        return stat.S_ISFIFO, reader


def output_value(kind, flag_kind, tmp_path, inputs):
    """(the value to give the flag, a check run after the script, whether it succeeds)."""
    if kind == "symlink":
        target = tmp_path / "target"
        if flag_kind == "folder":
            target.mkdir()
        else:
            target.write_text("old")
        link = tmp_path / "link"
        os.symlink(target, link)
        return link, lambda: os.path.islink(link) and os.readlink(link) == str(target), True
    if kind == "device":
        device = tmp_path / "device"
        is_kind, _reader = make_device(str(device))
        return device, lambda: is_kind(os.lstat(device).st_mode), flag_kind == "file"
    if kind == "folder":
        (tmp_path / "a_folder").mkdir()
        return tmp_path / "a_folder", lambda: (tmp_path / "a_folder").is_dir(), False
    if kind == "file":
        (tmp_path / "a_file.txt").write_text("x")
        return tmp_path / "a_file.txt", lambda: (tmp_path / "a_file.txt").read_text() == "x", False
    if kind == "under_file":
        (tmp_path / "plain.txt").write_text("x")
        return tmp_path / "plain.txt" / "out", lambda: (tmp_path / "plain.txt").read_text() == "x", False
    if kind == "unwritable":
        return f"{UNWRITABLE}/out" if flag_kind == "file" else UNWRITABLE, lambda: True, False
    if kind == "input":
        return inputs[0], lambda: True, False
    raise AssertionError(kind)


def output_cases():
    for script, flags in OUTPUT_FLAGS.items():
        for flag, flag_kind in flags.items():
            for kind in KINDS[flag_kind]:
                if script in PARSE_ONLY and (kind == "input" or kind in SUCCEEDS):
                    continue  # it reads no file; a run that succeeds takes a minute (see PARSE_ONLY)
                yield pytest.param(script, flag, kind, id=f"{script}-{flag}-{kind}")


def assert_clean_ending(code, out, err, expected, what):
    errors = error_lines(err)
    assert "Traceback" not in err, f"{what}: traceback\n{err}"
    if expected == 0:
        assert code == 0 and not errors, f"{what}: expected success, got {code}\n{err}"
    else:
        assert code == 2 and len(errors) == 1, f"{what}: expected one error line and exit 2, got {code}\n{err}"


@pytest.mark.parametrize("script, flag, kind", list(output_cases()))
def test_output_flags(world, tmp_path, monkeypatch, capsys, script, flag, kind):
    out = tmp_path / "out"
    out.mkdir()
    args, inputs = base_arguments(script, world, out)
    if script == "build_base_jsonl.py" and flag == "--images":
        args.append("--download")  # --images is an output only when downloading
    if script == "lgip_report.py" and kind == "input":
        inputs = [world["files"]["metrics"]]
    value, still_fine, succeeds = output_value(kind, OUTPUT_FLAGS[script][flag], tmp_path, inputs)
    args = with_flag(args, flag, value)
    before = digest(inputs)
    cache_before = set(Path(world["cache"]).rglob("*")) if Path(world["cache"]).exists() else set()
    code, out_text, err = run_here(script, args, monkeypatch, capsys, refuse_loading=not succeeds)
    what = f"{script} {flag} -> {kind}"
    assert_clean_ending(code, out_text, err, 0 if succeeds else 2, what)
    assert digest(inputs) == before, f"{what}: an input changed"
    assert still_fine(), f"{what}: what was at the path was replaced or changed"
    if not succeeds and script in EVALUATION:
        now = set(Path(world["cache"]).rglob("*")) if Path(world["cache"]).exists() else set()
        assert now == cache_before, f"{what}: the cache changed before the refusal"
    if succeeds and kind == "symlink" and OUTPUT_FLAGS[script][flag] == "file":
        assert (tmp_path / "target").read_bytes() != b"old", f"{what}: the link's target did not get the output"


def number_cases():
    for script, flags in NUMBER_FLAGS.items():
        for flag in flags:
            for value in (0, -1):
                yield pytest.param(script, flag, value, id=f"{script}-{flag}={value}")


@pytest.mark.parametrize("script, flag, value", list(number_cases()))
def test_number_flags_at_zero_and_minus_one(world, tmp_path, monkeypatch, capsys, script, flag, value):
    out = tmp_path / "out"
    out.mkdir()
    args, inputs = base_arguments(script, world, out)
    number_type = next(action.type for action in script_parser(script, monkeypatch)._actions
                       if flag in action.option_strings)
    accepted = value >= number_type.minimum
    args = with_flag(args, flag, value)
    if accepted and script in PARSE_ONLY:
        parsed, _rest = script_parser(script, monkeypatch).parse_known_args(list(map(str, args)))
        assert getattr(parsed, flag.lstrip("-").replace("-", "_")) == value
        return
    before = digest(inputs)
    code, out_text, err = run_here(script, args, monkeypatch, capsys, refuse_loading=not accepted)
    assert_clean_ending(code, out_text, err, 0 if accepted else 2, f"{script} {flag} {value}")
    assert digest(inputs) == before
    if not accepted:
        assert f"argument {flag}: expected a " in err
        return
    if script in EVALUATION:  # the number reached the run: it is in the metric file's config
        written = [json.loads(path.read_text()) for path in out.glob("*.json")]
        entries = [entry for payload in written for entry in (payload if isinstance(payload, list) else [payload])]
        assert entries, f"{script} {flag} {value}: no metric file"
        if flag == "--budgets":
            assert all(entry["budgets"] == [value] for entry in entries)
            return
        key = {"--workers": "workers", "--bootstrap": "bootstrap_resamples", "--seed": "seed"}.get(flag)
        if key is None:  # a probe's own number: the run above took it and finished
            return
        assert all(entry["config"][key] == value for entry in entries)
        if flag == "--bootstrap":
            assert all(entry["ci95"] == {} for entry in entries)


def test_every_flag_of_every_script_is_in_the_tables(monkeypatch):
    """The tables above cover every script and flag, and every number flag (of the
    benchmarks too) takes one of lgip.cli's number types, never a bare int or float."""
    scripts = sorted(path.name for path in REPO.glob("*.py") if path.name != "lgip_common.py")
    assert sorted(OUTPUT_FLAGS) == scripts, "add the new script to the tables of this test"
    for script in scripts + [f"bench/{path.name}" for path in (REPO / "bench").glob("*.py")]:
        parser = script_parser(script, monkeypatch)
        numbers = {flag: action.type for action in parser._actions for flag in action.option_strings
                   if action.type in (int, float) or action.type in NUMBER_TYPES}
        bare = sorted(flag for flag, kind in numbers.items() if kind in (int, float))
        assert not bare, f"{script}: {bare} take a bare int/float; use lgip.cli's positive_int, nonnegative_int, ..."
        if script.startswith("bench/"):
            continue
        assert sorted(numbers) == sorted(NUMBER_FLAGS[script]), script
        flags = {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")}
        unclassified = flags - set(numbers) - set(OUTPUT_FLAGS[script]) - OTHER_FLAGS
        assert not unclassified, f"{script}: classify {sorted(unclassified)} in this test's tables"
