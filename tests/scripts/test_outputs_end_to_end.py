"""Issue 11's classes, end to end, each as a user meets it: per-pair dumps in every
format, failures at write time, read-only storage, pipes a reader closed, tags two
models share, --limit runs, --strict, short and empty captions, --quiet, the quickstart's
printed commands and two generator messages. (Outputs pointed at links, devices,
folders and inputs, and number flags at 0 and -1, are in test_output_fuzz.py.)"""
import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, digest, error_lines, run_here

STEM = "base_perturb"  # the tiny world's perturbed file: base_perturb.jsonl


def multi_args(tiny, out, *extra, models=None, data=None):
    """run_lgip_multi.py's arguments: the tiny open_clip model (or `models`) on the tiny
    perturbed file (or `data`), into `out`, no workers, no bootstrap, no bars."""
    return ["--input", data or tiny.perturb, "--models", *(models or [tiny.openclip]), "--output-dir", out,
            "--workers", 0, "--bootstrap", 0, "--quiet", *extra]


def metric_files(folder):
    return sorted(path.name for path in Path(folder).glob("*.json"))


# --- 1. dumps in every format, and failures at write time --------------------------------

@pytest.mark.parametrize("name", ["pairs.csv", "pairs.csv.gz", "pairs_without_extension"])
def test_dump_pairs_works_in_every_format(tiny, tmp_path, monkeypatch, capsys, name):
    dump = tmp_path / name
    code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, tmp_path, "--dump-pairs", dump), monkeypatch,
                               capsys)
    assert code == 0, err
    data = gzip.decompress(dump.read_bytes()) if name.endswith(".gz") else dump.read_bytes()
    rows = list(csv.DictReader(data.decode().splitlines()))
    metrics = json.loads((tmp_path / f"{STEM}__LGIP_{rows[0]['model_tag']}.metrics.json").read_text())
    assert len(rows) == metrics["num_invariance_pairs"] + metrics["num_sensitivity_pairs"]
    assert (tmp_path / f"{STEM}__LGIP_ALL.metrics.json").exists()


@pytest.mark.parametrize("script, flag", [("run_lgip_multi.py", "--dump-pairs"), ("diff_gen_caption.py", "--output"),
                                          ("lgip_report.py", "--csv")])
def test_a_write_that_fails_after_the_checks_is_one_error_line(tiny, tmp_path, monkeypatch, capsys, script, flag):
    """/dev/full passes every check (a writable device) and then has no space."""
    if not os.path.exists("/dev/full"):
        pytest.skip("this system has no /dev/full")
    args = {"run_lgip_multi.py": multi_args(tiny, tmp_path),
            "diff_gen_caption.py": ["--input", tiny.base],
            "lgip_report.py": [tmp_path]}[script]
    if script == "lgip_report.py":
        code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, tmp_path), monkeypatch, capsys)
        assert code == 0, err
    code, _out, err = run_here(script, [*args, flag, "/dev/full"], monkeypatch, capsys)
    assert code == 2 and error_lines(err) == ["error: /dev/full: could not be written (No space left on device)"]


# --- 3. read-only storage, for real (a read-only bind mount in a private namespace) -----

def read_only_runs(source, mount, commands):
    """[(exit code, stderr)] of each `[script, arg, ...]`, run in one process with
    `source` mounted read-only at `mount`, in a mount namespace of its own (nothing
    outside sees the mount); None where this user may not make one."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        return None
    script = f'mount --bind "{source}" "{mount}" && mount -o remount,bind,ro "{mount}" && exec "$@"'
    runs = json.dumps([[str(part) for part in command] for command in commands])
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "tests.helpers", runs],
                            capture_output=True, text=True, cwd=str(REPO))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_an_input_on_read_only_storage_is_refused_before_any_work_unless_told_where_to_write(tiny, tmp_path):
    source, mount = tmp_path / "data", tmp_path / "mounted"
    mount.mkdir()
    shutil.copytree(Path(tiny.perturb).parent, source)
    data = mount / Path(tiny.perturb).name
    command = ["run_lgip_multi.py", "--input", data, "--models", tiny.openclip, "--quiet", "--bootstrap", 0,
               "--workers", 0, "--limit", 2]
    out, cache = tmp_path / "out", tmp_path / "cache"
    results = read_only_runs(source, mount, [command, [*command, "--output-dir", out],
                                             [*command, "--output-dir", out, "--cache-dir", cache],
                                             ["lgip_report.py", out, "--csv", mount / "table.csv"]])
    if results is None:
        pytest.skip("no unshare/mount here; test_output_fuzz.py's /proc cases cover unwritable places for root")
    [[code_out, err_out], [code_cache, err_cache], [code_told, err_told], [code_report, err_report]] = results
    assert code_out == 2 and "Traceback" not in err_out
    [line] = error_lines(err_out)
    assert "--output-dir (not given: the input's folder)" in line and "Read-only file system" in line
    [line] = error_lines(err_cache)
    assert code_cache == 2 and line.startswith(
        f"error: --cache-dir (not given: beside the input; name one, or pass --no-cache) {mount}")
    assert code_told == 0, err_told
    assert (out / f"{STEM}__limit2__LGIP_ALL.metrics.json").exists()
    assert code_report == 2 and "Read-only file system" in error_lines(err_report)[0]


# --- 4. no output is an input -------------------------------------------------------------

def test_a_model_file_or_an_image_is_never_an_output(tiny, tmp_path, monkeypatch, capsys):
    weights = Path(tiny.openclip.split("local-dir:", 1)[1]) / "open_clip_model.safetensors"
    image = sorted(Path(tiny.images[0]).parent.glob("*.jpg"))[0]
    for output in (weights, image):
        before = digest([output])
        code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, tmp_path, "--dump-pairs", output),
                                   monkeypatch, capsys, refuse_loading=True)
        assert code == 2 and "output path is the input file" in error_lines(err)[0]
        assert digest([output]) == before


# --- 6. a closed pipe never costs a file ---------------------------------------------------

def run_with_closed_stdout(command, how):
    """Run `command` with stdout a pipe whose reader is already gone, as after `| head`
    (`how`: "unbuffered" breaks at the first print, "buffered" at the last flush), or
    with no stdout at all ("closed", as `>&-`)."""
    if how == "closed":
        return subprocess.run(["sh", "-c", '"$@" >&-', "sh", sys.executable, *map(str, command)],
                              stderr=subprocess.PIPE, text=True, cwd=str(REPO))
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = dict(os.environ, PYTHONUNBUFFERED="1" if how == "unbuffered" else "")
    try:
        return subprocess.run([sys.executable, *map(str, command)], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=str(REPO), env=env)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("how", ["unbuffered", "buffered", "closed"])
def test_a_report_piped_into_a_closed_reader_still_writes_its_plots(tmp_path, how):
    metrics = tmp_path / "m.metrics.json"
    metrics.write_text(json.dumps([{"model_tag": f"model_{number}", "num_samples": 9, "invariance_error_mean": 0.1,
                                    "sensitivity_gap_mean": 0.01 * number, "sensitivity_pos_rate": 0.5,
                                    "config": {"script": "run_lgip_multi.py", "input": "p.jsonl"}}
                                   for number in range(40)]))  # a long table
    result = run_with_closed_stdout([REPO / "lgip_report.py", metrics, "--plot-frontier", tmp_path / "p.png",
                                     "--csv", tmp_path / "t.csv"], how)
    assert result.returncode == 0 and result.stderr == ""
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "t.csv").exists()


def test_an_evaluation_piped_into_a_closed_reader_still_writes_its_metric_file(tiny, tmp_path):
    result = run_with_closed_stdout([REPO / "run_lgip_by_fliptype.py", "--input", tiny.fliptypes, "--models",
                                     tiny.openclip, "--output-dir", tmp_path, "--quiet", "--bootstrap", 0],
                                    "unbuffered")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "base_fliptypes__LGIP_fliptypes.metrics.json").exists()


# --- 7. tags: unique in a run, named by the user, never silently replaced ------------------

def test_two_models_that_would_share_a_tag_keep_their_own_files(tiny, tmp_path, monkeypatch, capsys):
    folder = Path(tiny.openclip.split("local-dir:", 1)[1])
    specs = []
    for run in ("a", "b"):
        (tmp_path / run / "models").mkdir(parents=True)
        os.symlink(folder, tmp_path / run / "models" / "m")
        specs.append(f"openclip:local-dir:{tmp_path / run / 'models' / 'm'}")
    out = tmp_path / "out"
    code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, out, models=specs), monkeypatch, capsys)
    assert code == 0, err
    assert metric_files(out) == [f"{STEM}__LGIP_ALL.metrics.json", f"{STEM}__LGIP_openclip_a_models_m.metrics.json",
                                 f"{STEM}__LGIP_openclip_b_models_m.metrics.json"]
    combined = json.loads((out / f"{STEM}__LGIP_ALL.metrics.json").read_text())
    assert [entry["config"]["spec"] for entry in combined] == specs

    # Alone, each is openclip_models_m: the second run must not replace the first's file.
    alone = tmp_path / "alone"
    assert run_here("run_lgip_multi.py", multi_args(tiny, alone, models=specs[:1]), monkeypatch, capsys)[0] == 0
    first = (alone / f"{STEM}__LGIP_openclip_models_m.metrics.json").read_bytes()
    code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, alone, models=specs[1:]), monkeypatch, capsys,
                               refuse_loading=True)
    assert code == 2 and f"was written for model '{specs[0]}'" in error_lines(err)[0] and "--overwrite" in err
    assert (alone / f"{STEM}__LGIP_openclip_models_m.metrics.json").read_bytes() == first
    cache = Path(tiny.perturb).parent / ".lgip_cache"
    cached_models = sorted(cache.iterdir())
    code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, alone, models=[f"run_b={specs[1]}"]),
                               monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((alone / f"{STEM}__LGIP_run_b.metrics.json").read_text())["config"]["spec"] == specs[1]
    assert sorted(cache.iterdir()) == cached_models  # a model named by the user finds its embeddings
    code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, alone, "--overwrite", models=specs[1:]),
                               monkeypatch, capsys)
    assert code == 0 and json.loads((alone / f"{STEM}__LGIP_openclip_models_m.metrics.json").read_text())[
        "config"]["spec"] == specs[1]


def test_random_weights_must_be_asked_for(tiny, tmp_path, monkeypatch, capsys):
    code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, tmp_path, models=["openclip:ViT-B-16"]),
                               monkeypatch, capsys, refuse_loading=True)
    assert code == 2 and "names no weights" in error_lines(err)[0] and not list(tmp_path.iterdir())


# --- 10. a --limit run never replaces the full run's files --------------------------------

def test_limited_runs_say_so_in_their_file_names(tiny, tmp_path, monkeypatch, capsys):
    assert run_here("run_lgip_multi.py", multi_args(tiny, tmp_path), monkeypatch, capsys)[0] == 0
    full = digest([tmp_path])
    code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, tmp_path, "--limit", 3, "--bootstrap", 50),
                               monkeypatch, capsys)
    assert code == 0, err
    assert digest([tmp_path]).items() >= full.items()  # the full run's files are untouched
    tag = json.loads((tmp_path / f"{STEM}__LGIP_ALL.metrics.json").read_text())[0]["model_tag"]
    limited = json.loads((tmp_path / f"{STEM}__limit3__LGIP_{tag}.metrics.json").read_text())
    assert limited["num_samples"] == 3 and limited["config"]["limit"] == 3
    assert limited["ci95"] and all(interval is None for interval in limited["ci95"].values())  # 3 images: too few
    assert (tmp_path / f"{STEM}__limit3__LGIP_ALL.metrics.json").exists()
    code, _out, err = run_here("run_lgip_by_fliptype.py", ["--input", tiny.fliptypes, "--models", tiny.openclip,
                                                           "--output-dir", tmp_path, "--workers", 0, "--bootstrap", 0,
                                                           "--quiet", "--limit", 2], monkeypatch, capsys)
    assert code == 0 and (tmp_path / "base_fliptypes__limit2__LGIP_fliptypes.metrics.json").exists(), err
    base = tmp_path / "base.jsonl"
    shutil.copy(tiny.base, base)
    assert run_here("diff_gen_caption.py", ["--input", base, "--limit", 4], monkeypatch, capsys)[0] == 0
    assert (tmp_path / "base_with_perturb__limit4.jsonl").exists() and not (tmp_path / "base_with_perturb.jsonl").exists()


# --- 11. --strict before the work, short and empty captions, --quiet ----------------------

def records_with_images(tiny, path, edit):
    """The tiny perturbed file with absolute image paths, `edit(records)` applied."""
    folder = Path(tiny.perturb).parent
    records = [json.loads(line) for line in Path(tiny.perturb).read_text().splitlines() if line.strip()]
    for record in records:
        record["image_path"] = str(folder / record["image_path"])
    edit(records)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_strict_stops_at_the_images_before_any_text_is_encoded(tiny, tmp_path, monkeypatch, capsys):
    import lgip.engine.scores

    missing = records_with_images(tiny, tmp_path / "missing.jsonl",
                                  lambda records: records[2].update(image_path=str(tmp_path / "gone.jpg")))
    code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, tmp_path, "--strict", data=missing),
                               monkeypatch, capsys, refuse_loading=True)
    assert code == 2 and error_lines(err)[0].startswith(f"error: {missing}:3: image {tmp_path / 'gone.jpg'}")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    corrupt = records_with_images(tiny, tmp_path / "corrupt.jpg.jsonl",
                                  lambda records: records[1].update(image_path=str(broken)))

    def no_texts(*_args, **_kwargs):
        raise AssertionError("texts were encoded before --strict refused the image")

    monkeypatch.setattr(lgip.engine.scores, "embed_text_units", no_texts)
    code, _out, err = run_here("run_lgip_multi.py", multi_args(tiny, tmp_path, "--strict", "--no-cache", data=corrupt),
                               monkeypatch, capsys)
    assert code == 2 and f"{corrupt}:2: image {broken} could not be read" in error_lines(err)[0]


def test_short_records_and_empty_captions_are_counted_and_warned_or_refused(tiny, tmp_path, monkeypatch, capsys):
    def damage(records):
        records[1]["orig_captions"] = records[1]["orig_captions"][:3]
        records[4]["orig_captions"][2] = ""

    data = records_with_images(tiny, tmp_path / "damaged.jsonl", damage)
    args = multi_args(tiny, tmp_path, data=data)
    code, _out, err = run_here("run_lgip_multi.py", args, monkeypatch, capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {data}:2: record has fewer than 5 captions; 1 such record(s), scored as they are (--strict makes "
        f"this an error)",
        f"warning: {data}:5: caption 2 is empty; 1 empty caption(s), scored as they are (--strict makes this an error)"]
    [entry] = json.loads((tmp_path / "damaged__LGIP_ALL.metrics.json").read_text())
    assert (entry["num_records_with_few_captions"], entry["num_empty_captions"]) == (1, 1)
    code, _out, err = run_here("run_lgip_multi.py", [*args, "--strict"], monkeypatch, capsys, refuse_loading=True)
    assert code == 2 and error_lines(err) == [f"error: {data}:2: record has 3 caption(s), fewer than 5 (--strict)"]


def test_quiet_hides_the_loading_bars_of_transformers(tiny, tmp_path, monkeypatch, capsys):
    # --no-cache: a rerun whose embeddings are all cached loads no model, so it shows no bar
    args = multi_args(tiny, tmp_path, "--no-cache", models=[tiny.siglip])
    loud = [arg for arg in args if arg != "--quiet"]
    code, _out, err_loud = run_here("run_lgip_multi.py", loud, monkeypatch, capsys)
    code_quiet, _out, err_quiet = run_here("run_lgip_multi.py", args, monkeypatch, capsys)
    assert code == code_quiet == 0
    assert "Loading" in err_loud or "it/s" in err_loud  # the bars --quiet must hide are there without it
    assert "it/s" not in err_quiet and "Loading" not in err_quiet


# --- 11. the quickstart's commands and two generators' messages ----------------------------

def test_the_quickstart_prints_commands_a_shell_can_run(tiny, tmp_path, capsys):
    import shlex

    import lgip_quickstart

    folder = tmp_path / "a folder with spaces"
    folder.mkdir()
    shutil.copy(tiny.base, folder / "base.jsonl")
    lgip_quickstart.run_stage(1, 1, "paraphrases", "diff_gen_caption.py", "--input", str(folder / "base.jsonl"),
                              "--output", str(folder / "out put.jsonl"))
    [command] = [line[2:] for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]
    assert shlex.split(command) == ["python", "diff_gen_caption.py", "--input", str(folder / "base.jsonl"),
                                    "--output", str(folder / "out put.jsonl")]
    assert (folder / "out put.jsonl").exists()


def test_generator_and_builder_messages_say_what_they_mean(tmp_path, monkeypatch, capsys):
    code, out, _err = run_here("make_compositional_perturb.py", ["--help"], monkeypatch, capsys)
    assert code == 0 and "--rules" not in out and "perturbed JSONL" in out
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"annotations": []}))
    code, _out, err = run_here("build_base_jsonl.py", ["--captions", captions, "--output", tmp_path / "o.jsonl"],
                               monkeypatch, capsys)
    assert code == 2 and error_lines(err) == [
        f"error: {captions}: not COCO's captions format: the top-level object has no 'images' list"]
