"""lgip.engine.distributed: the launch read from torchrun's and srun's variables, model
assignment, the one-process no-ops, and the collectives between two real gloo ranks
(uneven and empty shares, chunked gathers, tokens tokenised in shares, a rank that dies)."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lgip.engine.distributed import (SOLO, Dist, Launch, assign_longest_first, expand_counts, first_host, read_launch,
                                     short_reason)
from lgip.io import InputError

REPO = Path(__file__).resolve().parents[2]
SLURM_STEP = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
              "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456",
              "SLURM_NTASKS": "8"}


def test_torchrun_variables_give_the_rank():
    launch = read_launch({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                          "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2"})  # torchrun's win over SLURM's
    assert launch == Launch(3, 4, 1, 2, "torchrun", None)


def test_an_srun_step_gives_the_rank_and_a_rendezvous_on_its_first_node():
    launch = read_launch(SLURM_STEP)
    assert (launch.rank, launch.world_size, launch.local_rank, launch.local_world_size) == (5, 8, 1, 4)
    assert launch.launcher == "slurm"
    assert launch.init_method == "tcp://gpu07:" + str(29500 + 123456 % 10000)
    chosen = read_launch({**SLURM_STEP, "MASTER_ADDR": "head", "MASTER_PORT": "4000"})
    assert chosen.init_method == "tcp://head:4000"


def test_a_batch_script_without_a_job_step_is_one_process():
    # sbatch's own shell has SLURM_PROCID=0 and SLURM_NTASKS=N but is one process: no rendezvous.
    batch_shell = {key: value for key, value in SLURM_STEP.items() if not key.startswith("SLURM_STEP")}
    assert read_launch(batch_shell) == Launch()
    assert read_launch({}) == Launch()
    assert read_launch({**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "1"}) == Launch()


def test_malformed_launch_variables_are_input_errors():
    with pytest.raises(InputError, match="WORLD_SIZE='two'"):
        read_launch({"RANK": "0", "WORLD_SIZE": "two"})
    with pytest.raises(InputError, match="tasks per node"):
        read_launch({**SLURM_STEP, "SLURM_STEP_TASKS_PER_NODE": "4x2"})


def test_slurm_lists_are_expanded():
    assert expand_counts("2(x3),1") == [2, 2, 2, 1]
    assert expand_counts("8") == [8]
    assert first_host("gpu[07-09,12],cpu1") == "gpu07"
    assert first_host("node5,node6") == "node5"


def test_models_are_balanced_longest_first_and_ties_follow_the_seed():
    costs = [10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assigned = assign_longest_first(costs, 2, seed=0)
    assert sorted(i for part in assigned for i in part) == list(range(len(costs)))
    assert sorted(sum(costs[i] for i in part) for part in assigned) == [10, 10]
    assert all(part == sorted(part) for part in assigned)
    equal = [1.0] * 9
    by_seed = {seed: assign_longest_first(equal, 4, seed) for seed in range(6)}
    assert by_seed[3] == assign_longest_first(equal, 4, 3)
    assert all(sorted(map(len, parts)) == [2, 2, 2, 3] for parts in by_seed.values())
    assert len({json.dumps(parts) for parts in by_seed.values()}) > 1  # the seed, not the order, decides ties


def test_one_process_collectives_are_no_ops():
    assert not SOLO.distributed and SOLO.is_main
    items = [[1, 2], [3]]
    assert SOLO.shard(items) is items
    rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    gathered = SOLO.gather_rows(rows, [4, 0, 2], 5)
    assert np.array_equal(gathered[[4, 0, 2]], rows) and np.isnan(gathered[[1, 3]]).all()
    assert SOLO.gather_rows(np.zeros((0, 2)), [], 5) is None
    assert SOLO.gather_json({"a": 1}) == [{"a": 1}]
    mask = np.array([True, False])
    assert SOLO.broadcast_mask(mask, 2) is mask
    assert SOLO.init("auto") == "auto"
    SOLO.barrier(), SOLO.wait_for_all(), SOLO.close()


def test_workers_are_shared_by_the_ranks_of_a_machine():
    four_here = Dist(Launch(0, 8, 0, 4, "torchrun"))
    assert [four_here.workers_per_rank(w) for w in (0, 1, 8, 9)] == [0, 1, 2, 2]
    assert four_here.shard(list(range(10))) == [0, 8]
    assert Dist(Launch(3, 8, 3, 4, "torchrun")).shard(np.arange(10)).tolist() == [3]


def test_backend_errors_shrink_to_their_gist():
    error = RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
                         "[127.0.0.1]:2393: Connection reset by peer. This is typically caused by a remote worker.\n"
                         "Exception raised from ...")
    assert short_reason(error) == "Read error [127.0.0.1]:2393: Connection reset by peer"
    assert short_reason(RuntimeError()) == "RuntimeError"


TWO_RANKS = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from lgip.engine import distributed, embed
    from lgip.engine.embed import tokenize_all
    from lgip.io import RankFailure
    from lgip.models.base import TokenBatch

    distributed.GATHER_CHUNK_BYTES = 2 * 3 * 4  # two rows of width 3 per round: several rounds
    dist = distributed.Dist(distributed.read_launch())
    dist.init("cpu", timeout_seconds=20)
    results = {}
    full = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    mine = np.asarray(dist.shard(np.arange(7)))  # rank 0: 0 2 4 6, rank 1: 1 3 5
    gathered = dist.gather_rows(full[mine], mine, 7)
    results["strided"] = None if gathered is None else gathered.tolist()
    uneven = np.arange(5) if dist.rank == 1 else np.arange(0)  # rank 0 sends nothing
    gathered = dist.gather_rows(full[uneven], uneven, 7)
    results["uneven"] = None if gathered is None else np.nan_to_num(gathered, nan=-1).tolist()
    results["nothing"] = dist.gather_rows(np.zeros((0, 3), np.float32), [], 7) is None
    results["json"] = dist.gather_json({"rank": dist.rank, "text": "é" * dist.rank})
    results["mask"] = dist.broadcast_mask(np.array([True, False, True]) if dist.is_main else None, 3).tolist()

    class Letters:  # a tokenizer: one id per character, at most 6
        pad_id = 0

        def loaded(self):
            return self

        def tokenize(self, texts):
            ids = np.zeros((len(texts), 6), np.int64)
            for row, text in enumerate(texts):
                ids[row, :min(6, len(text))] = [ord(c) for c in text[:6]]
            lengths = np.array([min(6, len(text)) for text in texts], np.int64)
            return TokenBatch(ids, lengths, np.array([len(text) > 6 for text in texts]))

    texts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg", "h", ""]  # 5 chunks of 2: 3 + 2 per rank
    embed.TOKENIZE_CHUNK = 2
    shared = tokenize_all(Letters(), texts, progress=False, dist=dist)
    alone = tokenize_all(Letters(), texts, progress=False)
    every = np.arange(len(texts))
    same = all(np.array_equal(a, b) for a, b in zip(shared.token_lists(every), alone.token_lists(every))) and all(
        np.array_equal(getattr(shared.facts, name), getattr(alone.facts, name)) for name in ("length", "truncated", "hash"))
    results["tokens"] = dist.gather_json(same)
    dist.barrier()
    if dist.rank == 1:
        os._exit(3)  # dies without a word
    try:
        dist.gather_rows(full[:1], [0], 7)
    except RankFailure as err:
        results["failure"] = str(err)
    print(json.dumps(results), flush=True)
    os._exit(0)  # as run_cli leaves after a RankFailure: a group that lost a peer cannot be torn down
""")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_ranks_gather_uneven_shares_and_a_dead_rank_is_one_line():
    port = free_port()
    env = {**os.environ, "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    ranks = [subprocess.Popen([sys.executable, "-c", TWO_RANKS], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) for r in (0, 1)]
    outputs = [rank.communicate(timeout=120) for rank in ranks]
    assert ranks[1].returncode == 3, outputs[1][1]
    assert ranks[0].returncode == 0, outputs[0][1]
    results = json.loads(outputs[0][0])
    full = np.arange(21, dtype=np.float32).reshape(7, 3)
    assert results["strided"] == full.tolist()
    assert results["uneven"] == full[:5].tolist() + [[-1, -1, -1]] * 2
    assert results["nothing"] is True
    assert results["json"] == [{"rank": 0, "text": ""}, {"rank": 1, "text": "é"}]
    assert results["mask"] == [True, False, True]
    assert results["tokens"] == [True, True]  # each rank's whole table equals one process's
    failure = results["failure"]
    assert failure.startswith("rank 0 of 2: gathering embeddings failed (") and "\n" not in failure
    assert "rerun" in failure and ".cc:" not in failure
