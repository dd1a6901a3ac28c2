"""The evaluation scripts and the labelled-image probes under `torchrun --standalone
--nproc-per-node 2` (gloo, on the CPU) and launched as `srun` launches a job step, over two
tiny open_clip models: every file equals a one-process run's apart from timings and the
recorded world size, whether the ranks share each model or take whole models
(--shard-models); a second run on another number of ranks encodes nothing; a rank killed mid-encoding stops the other with one
error line, and a rerun resumes from the cache and ends with a clean run's files.

Every run has one thread per process (torchrun's default), so that embeddings can be
compared bit for bit: a different thread count may move the last digits of a float.
"""
import contextlib
import glob
import io
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lgip.engine.run import without_launch_details  # noqa: E402
from lgip.tiny import OPENCLIP_MODEL_CFG, build_tiny_openclip, draw_images  # noqa: E402
from tests.helpers import write_records  # noqa: E402

CLASSES = ["bus", "cat", "dog"]  # the labelled-image probes' image folder: a subfolder per class

RUN_TIMEOUT = 300  # seconds for any one launch: a hang fails the test instead of the suite
DIST_TIMEOUT = 30  # --dist-timeout of the killed run: the survivor must stop well within it
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
COMMON = ["--workers", "0", "--bootstrap", "50", "--quiet"]
SMALL_BATCHES = ["--batch-size", "4", "--text-batch-size", "16"]  # several batches per rank


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny open_clip models of different sizes, 16 drawn images and one input file
    with paraphrases, typed flips, combined edits and compositional probes, so that every
    evaluation script reads it."""
    root = tmp_path_factory.mktemp("distributed")
    deeper = {**OPENCLIP_MODEL_CFG, "vision_cfg": {**OPENCLIP_MODEL_CFG["vision_cfg"], "layers": 3}}
    models = [build_tiny_openclip(root / "openclip_a"), build_tiny_openclip(root / "openclip_b", deeper)]
    base = write_records(root / "data" / "base.jsonl", draw_images(root / "data" / "images", 16))
    enhanced, compositional = root / "data" / "enhanced.jsonl", root / "data" / "compositional.jsonl"
    for script, source, output in [("rebuttal_enhanced_perturb_with_fliptypes.py", base, enhanced),
                                   ("make_compositional_perturb.py", enhanced, compositional)]:
        subprocess.run([sys.executable, str(REPO / script), "--input", str(source), "--output", str(output)],
                       check=True, capture_output=True, cwd=REPO, timeout=RUN_TIMEOUT)
    return SimpleNamespace(root=root, models=models, input=str(compositional))


@pytest.fixture(scope="module")
def labelled(world):
    """An image folder with three drawn images in each of CLASSES."""
    folder = world.root / "labelled"
    for index, name in enumerate(CLASSES):
        draw_images(folder / name, 3, seed=10 + index)
    return folder


def clean_env(extra=None):
    env = {key: value for key, value in os.environ.items() if key not in LAUNCH_VARIABLES}
    return {**env, **ENV, **(extra or {})}


def run_one(script, *args) -> str:
    """The one-process reference: the script's own `__main__`, run in this process as
    `python script args` runs it, with one torch thread as each rank has. (This process
    has torch and open_clip imported already: a new process would spend seconds on it.)"""
    import torch

    threads, argv = torch.get_num_threads(), sys.argv
    torch.set_num_threads(1)
    sys.argv = [str(REPO / script), *map(str, args)]
    try:
        with contextlib.redirect_stdout(io.StringIO()) as output:
            runpy.run_path(str(REPO / script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
        sys.argv = argv
    return output.getvalue()


def torchrun_command(script, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--tee", "3",
            str(REPO / script), *map(str, args)]


def run_torchrun(script, *args):
    """The script under torchrun with two ranks; each output line starts `[default<rank>]:`."""
    result = subprocess.run(torchrun_command(script, *args), capture_output=True, text=True, env=clean_env(),
                            cwd=REPO, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_like_srun(script, *args, tasks=2):
    """The script as `srun --ntasks 2` starts a job step on one node: every task gets
    SLURM's variables only (no torchrun, no MASTER_ADDR: it is the step's first node)."""
    step = {"SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_STEP_TASKS_PER_NODE": str(tasks), "SLURM_NODEID": "0",
            "SLURM_STEP_NODELIST": "localhost", "SLURM_JOB_ID": "4242", "MASTER_PORT": str(free_port())}
    tasks_started = [subprocess.Popen([sys.executable, str(REPO / script), *map(str, args)], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                      env=clean_env({**step, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)}))
                     for r in range(tasks)]
    outputs = [task.communicate(timeout=RUN_TIMEOUT)[0] for task in tasks_started]
    assert [task.returncode for task in tasks_started] == [0] * tasks, "\n".join(outputs)[-3000:]
    return outputs


def world_sizes(value):
    if isinstance(value, dict):
        return [value["world_size"]] if "world_size" in value else [s for item in value.values() for s in world_sizes(item)]
    return [s for item in value for s in world_sizes(item)] if isinstance(value, list) else []


def assert_same_files(one_process: Path, ranks: Path, world_size: int = 2):
    """Every file of the one-process run exists in the other with equal content: metric
    files bit for bit (JSON floats are exact) apart from timings and the world size,
    anything else (figures) byte for byte."""
    names = sorted(path.name for path in one_process.iterdir())
    assert names and names == sorted(path.name for path in ranks.iterdir())
    for name in names:
        if not name.endswith(".json"):
            assert (one_process / name).read_bytes() == (ranks / name).read_bytes(), name
            continue
        expected, found = (json.loads((folder / name).read_text()) for folder in (one_process, ranks))
        assert without_launch_details(found) == without_launch_details(expected), name
        assert set(world_sizes(expected)) == {1} and set(world_sizes(found)) == {world_size}, name


def shard_files(cache: Path):
    return sorted(glob.glob(str(cache / "*" / "*.npz")))


def wrote_lines(output: str):
    return [line for line in output.splitlines() if "]:wrote " in line or line.startswith("wrote ")]


def assert_whole_models_per_rank_and_merge_only(script, args, output: str, merged: Path):
    """A --shard-models run's per-model files came one from each rank; --merge-only,
    run afterwards, writes the same combined file `merged` again."""
    per_model = [line for line in wrote_lines(output) if "_ALL." not in line and ".metrics.json" in line]
    assert sorted(line[:len("[default0]:")] for line in per_model) == ["[default0]:", "[default1]:"]
    expected = merged.read_text()
    merged.unlink()
    run_one(script, *args, "--output-dir", merged.parent, "--merge-only")
    assert merged.read_text() == expected


def test_ranks_share_each_model_or_take_whole_models_and_write_what_one_process_writes(world, tmp_path):
    cache = tmp_path / "cache"
    args = ["--input", world.input, "--models", *world.models, "--cache-dir", cache, *COMMON, *SMALL_BATCHES]
    run_one("run_lgip_multi.py", *args, "--output-dir", tmp_path / "one")
    shutil.rmtree(cache)  # the same cache path (it is in the config), filled again by the ranks

    shared = run_torchrun("run_lgip_multi.py", *args, "--output-dir", tmp_path / "shared")
    assert_same_files(tmp_path / "one", tmp_path / "shared")
    written = wrote_lines(shared.stdout)
    assert len(written) == 3 and all(line.startswith("[default0]:") for line in written)  # rank 0 alone writes
    shards = shard_files(cache)
    assert any(name.endswith("-rank0.npz") for name in shards) and any(name.endswith("-rank1.npz") for name in shards)

    whole = run_torchrun("run_lgip_multi.py", *args, "--output-dir", tmp_path / "whole", "--shard-models")
    assert_same_files(tmp_path / "one", tmp_path / "whole")
    assert shard_files(cache) == shards  # the second run, on other terms, encoded nothing
    assert_whole_models_per_rank_and_merge_only("run_lgip_multi.py", args, whole.stdout,
                                                tmp_path / "whole" / "compositional__LGIP_ALL.metrics.json")


def test_compositional_probes_shared_by_ranks(world, tmp_path):
    cache = tmp_path / "cache"
    args = ["--input", world.input, "--models", world.models[0], "--cache-dir", cache, *COMMON, *SMALL_BATCHES]
    run_one("run_compositional.py", *args, "--output-dir", tmp_path / "one")
    shutil.rmtree(cache)
    run_like_srun("run_compositional.py", *args, "--output-dir", tmp_path / "ranks")
    assert_same_files(tmp_path / "one", tmp_path / "ranks")


@pytest.mark.parametrize("script", ["run_lgip_by_fliptype.py", "rebuttal_enhanced_lgip_by_transformation.py"])
def test_list_files_gather_whole_models_from_every_rank(world, tmp_path, script):
    cache = tmp_path / "cache"
    args = ["--input", world.input, "--models", *world.models, "--cache-dir", cache, *COMMON]
    run_one(script, *args, "--output-dir", tmp_path / "one")
    shutil.rmtree(cache)
    run_like_srun(script, *args, "--output-dir", tmp_path / "ranks", "--shard-models")
    assert_same_files(tmp_path / "one", tmp_path / "ranks")


def test_a_killed_rank_stops_the_other_with_one_line_and_a_rerun_resumes(world, tmp_path):
    cache = tmp_path / "cache"
    # One image or text per batch: a row's embedding then does not depend on which rows
    # a resumed run encodes with it, so the rerun must match a clean run bit for bit.
    args = ["--input", world.input, "--models", world.models[0], "--cache-dir", cache, *COMMON, "--batch-size", "1",
            "--text-batch-size", "1", "--cache-shard-rows", "2", "--dist-timeout", DIST_TIMEOUT]
    run_one("run_lgip_multi.py", *args, "--output-dir", tmp_path / "clean")
    shutil.rmtree(cache)

    launch = subprocess.Popen(torchrun_command("run_lgip_multi.py", *args, "--output-dir", tmp_path / "killed"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(), cwd=REPO)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not glob.glob(str(cache / "*" / "*-rank1.npz")):  # rank 1 is encoding
            assert launch.poll() is None and time.monotonic() < deadline, "the run ended before rank 1 wrote a shard"
            time.sleep(0.005)
        first_shard = os.path.basename(glob.glob(str(cache / "*" / "*-rank1.npz"))[0])
        os.kill(int(first_shard.split("-")[2]), signal.SIGKILL)  # <kind>-<time>-<pid>-rank1.npz
        killed_at = time.monotonic()
        output = launch.communicate(timeout=RUN_TIMEOUT)[0]
    finally:
        if launch.poll() is None:
            launch.kill()
    assert launch.returncode != 0 and time.monotonic() - killed_at < DIST_TIMEOUT
    rank0 = [line[len("[default0]:"):] for line in output.splitlines() if line.startswith("[default0]:")]
    errors = [line for line in rank0 if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: rank 0 of 2: "), output[-3000:]
    assert not (tmp_path / "killed").exists()  # nothing written, not even half
    finished = shard_files(cache)
    assert finished

    run_like_srun("run_lgip_multi.py", *args, "--output-dir", tmp_path / "resumed")
    assert_same_files(tmp_path / "clean", tmp_path / "resumed")
    after = shard_files(cache)
    assert set(finished) <= set(after)  # the finished shards were kept and used
    keys = np.concatenate([np.load(path)["keys"] for path in after])
    assert len(keys) == len(np.unique(keys))  # and nothing they hold was encoded again


def test_certification_shared_by_ranks_or_by_whole_models(world, labelled, tmp_path):
    cache = tmp_path / "cache"
    args = ["--input", labelled, "--models", *world.models, "--cache-dir", cache, *COMMON, *SMALL_BATCHES,
            "--budgets", "0", "0.02"]
    run_one("run_semantic_certification.py", *args, "--output-dir", tmp_path / "one")
    shutil.rmtree(cache)

    shared = run_torchrun("run_semantic_certification.py", *args, "--output-dir", tmp_path / "shared")
    assert_same_files(tmp_path / "one", tmp_path / "shared")
    assert all(line.startswith("[default0]:") for line in wrote_lines(shared.stdout))
    shards = shard_files(cache)
    assert any(name.endswith("-rank1.npz") for name in shards)  # rank 1 encoded its share

    run_like_srun("run_semantic_certification.py", *args, "--output-dir", tmp_path / "whole", "--shard-models")
    assert_same_files(tmp_path / "one", tmp_path / "whole")
    assert shard_files(cache) == shards  # everything was cached


MATCHING = ["--steps", "30", "--noise-sigmas", "0.02", "0.08", "--noise-draws", "2", "--pair-batch-size", "2",
            "--sources-per-class", "2", "--checkpoint-seconds", "0", "--examples", "3"]


def test_matching_pairs_shared_by_ranks_or_by_whole_models(world, labelled, tmp_path):
    cache = tmp_path / "cache"
    args = ["--input", labelled, "--models", *world.models, "--cache-dir", cache, *COMMON, *MATCHING]
    run_one("run_embedding_matching.py", *args, "--output-dir", tmp_path / "one")
    assert len(list((tmp_path / "one").glob("*.example_*.png"))) == 6  # the figures are compared too
    shutil.rmtree(cache)

    shared = run_torchrun("run_embedding_matching.py", *args, "--output-dir", tmp_path / "shared", "--keep-checkpoint")
    checkpoints = list((tmp_path / "shared").glob("*.checkpoint-*"))
    assert len(checkpoints) == 2
    for checkpoint in checkpoints:  # each rank descended its share of the pairs
        assert {path.name.split("-")[-1] for path in checkpoint.glob("records-*.npz")} == {"rank0.npz", "rank1.npz"}
        shutil.rmtree(checkpoint)
    assert_same_files(tmp_path / "one", tmp_path / "shared")
    assert all(line.startswith("[default0]:") for line in wrote_lines(shared.stdout))

    whole = run_torchrun("run_embedding_matching.py", *args, "--output-dir", tmp_path / "whole", "--shard-models")
    assert_same_files(tmp_path / "one", tmp_path / "whole")
    assert_whole_models_per_rank_and_merge_only("run_embedding_matching.py", args, whole.stdout,
                                                tmp_path / "whole" / "labelled__MATCHING_ALL.metrics.json")
