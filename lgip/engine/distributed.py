"""Ranks under `torchrun` or SLURM's `srun`: which process this is, its process group, and
the few tensor collectives the engine needs. The launch environment is read here and
nowhere else. With one process (no launcher, or a launch of one) every method is a no-op
and nothing is imported from torch.distributed, so a plain `python script.py` runs as it
always did.

How the engine uses it: what the cache lacks is cut into the batches a single process
would encode, `shard` hands each rank a strided slice of those batches (so every row is
encoded in the same batch as in a one-process run, and is bit for bit the same), each
rank writes its own cache shards, and `RowCollector` brings the rows to the main rank,
which alone computes, prints and writes. Under `--shard-models` each rank runs whole
models instead (`assign_longest_first`). A probe shards its own work the same way:
`dist.shard(pairs)`, compute, `dist.gather_rows(rows, indices, total)`.

Collectives exchange tensors only (sizes first, then padded chunks), never pickled
objects; every failure of one, and SIGTERM from a launcher that stops the other ranks,
becomes a one-line `RankFailure`.
"""
from __future__ import annotations

import datetime
import json
import os
import random
import re
import signal
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

from lgip.io import InputError, RankFailure

DIST_TIMEOUT_SECONDS = 1800  # a collective that waits longer than this fails (--dist-timeout)
MODEL_WAIT_SECONDS = 7 * 24 * 3600  # --shard-models: how long a rank done with its models waits for the slowest
GATHER_CHUNK_BYTES = 64 << 20  # rows sent per round by each rank, so the main rank never holds W full copies
DEFAULT_MASTER_PORT = 29500  # under srun without MASTER_PORT: this plus the job id modulo MASTER_PORT_SPREAD
MASTER_PORT_SPREAD = 10000


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a launch: rank, world size, rank and number of ranks
    on this machine, who launched it (`single`, `torchrun` or `slurm`) and the rendezvous
    address (`None` where torch reads MASTER_ADDR/MASTER_PORT itself)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    launcher: str = "single"
    init_method: Optional[str] = None


def _int_variable(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r}: expected a whole number") from None


def expand_counts(text: str) -> List[int]:
    """SLURM's per-node counts, `2(x3),1` -> [2, 2, 2, 1]."""
    counts = []
    for part in filter(None, text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise InputError(f"SLURM tasks per node {text!r}: expected counts like 2(x3),1")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `gpu[07-09,12],cpu1` -> `gpu07`."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise InputError(f"SLURM node list {nodelist!r}: no host name in it")
    prefix, ranges = match.group(1), match.group(2)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def read_launch(environ: Mapping[str, str] = os.environ) -> Launch:
    """This process's Launch, from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE), else from an `srun` job step's (SLURM_PROCID, SLURM_STEP_NUM_TASKS,
    SLURM_LOCALID, SLURM_STEP_TASKS_PER_NODE, SLURM_NODEID; the rendezvous at MASTER_ADDR
    and MASTER_PORT, or the step's first node and a port from the job id), else one
    process. A batch script's own SLURM variables (no job step) mean one process."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        world_size = _int_variable(environ, "WORLD_SIZE")
        local_world = _int_variable(environ, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in environ else world_size
        local_rank = _int_variable(environ, "LOCAL_RANK") if "LOCAL_RANK" in environ else 0
        return Launch(_int_variable(environ, "RANK"), world_size, local_rank, local_world, "torchrun")
    if "SLURM_PROCID" in environ and "SLURM_STEP_NUM_TASKS" in environ:
        world_size = _int_variable(environ, "SLURM_STEP_NUM_TASKS")
        if world_size <= 1:
            return Launch()
        per_node = expand_counts(environ.get("SLURM_STEP_TASKS_PER_NODE", "")) or [world_size]
        node = _int_variable(environ, "SLURM_NODEID") if "SLURM_NODEID" in environ else 0
        local_world = per_node[node] if node < len(per_node) else per_node[0]
        address = environ.get("MASTER_ADDR") or first_host(environ.get("SLURM_STEP_NODELIST")
                                                           or environ.get("SLURM_JOB_NODELIST", "localhost"))
        port = environ.get("MASTER_PORT") or str(DEFAULT_MASTER_PORT + _int_variable(environ, "SLURM_JOB_ID")
                                                 % MASTER_PORT_SPREAD if "SLURM_JOB_ID" in environ
                                                 else DEFAULT_MASTER_PORT)
        return Launch(_int_variable(environ, "SLURM_PROCID"), world_size, _int_variable(environ, "SLURM_LOCALID"),
                      local_world, "slurm", f"tcp://{address}:{port}")
    return Launch()


def short_reason(err: BaseException) -> str:
    """The gist of a backend's error in a few words: its first sentence, without the
    C++ source location gloo and nccl put in front (`[.../pair.cc:545] Read error ...`)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = re.sub(r"\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", lines[0]) if lines else ""
    return text.split(". ")[0].rstrip(".") or type(err).__name__


def assign_longest_first(costs: Sequence[float], world_size: int, seed: int) -> List[List[int]]:
    """Indices of `costs` per rank, balanced greedily: the costliest item first, each to
    the rank with the least so far (longest processing time). Ties are broken by a shuffle
    seeded with `seed`, so equal costs become a seeded round robin. Each rank's list is in
    the items' own order."""
    order = list(range(len(costs)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda item: -costs[item])  # stable: the shuffle decides among equals
    loads, assigned = [0.0] * world_size, [[] for _ in range(world_size)]
    for item in order:
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        loads[rank] += costs[item]
        assigned[rank].append(item)
    return [sorted(items) for items in assigned]


class Dist:
    """One process's view of the launch. Build it with `Dist(read_launch())`, call `init`
    before any collective, `close` at the end (or use it as a context manager). With a
    world size of one every method returns at once."""

    def __init__(self, launch: Launch = Launch()):
        self.launch = launch
        self.rank, self.world_size = launch.rank, launch.world_size
        self.local_rank, self.local_world_size = launch.local_rank, launch.local_world_size
        self.device = "cpu"  # where collectives put their tensors: the CPU (gloo) or cuda:LOCAL_RANK (nccl)
        self._patient_group = None
        self._previous_sigterm = None
        self._started = False

    @property
    def is_main(self) -> bool:
        """True on the rank that computes metrics, prints and writes (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writer(self) -> str:
        """What this rank's files add to their names where several ranks write into one
        folder (`-rank<r>`; nothing for one process)."""
        return f"-rank{self.rank}" if self.distributed else ""

    def __repr__(self) -> str:
        return f"Dist(rank {self.rank} of {self.world_size}, {self.launch.launcher})"

    # --- life cycle -------------------------------------------------------------
    def init(self, device: str = "auto", timeout_seconds: float = DIST_TIMEOUT_SECONDS) -> str:
        """Start the process group (nccl where this rank computes on CUDA, gloo otherwise)
        with `timeout_seconds` for every collective, and return the device this rank
        computes on: `auto` and `cuda` become `cuda:LOCAL_RANK` where CUDA is present.
        One process: `device` unchanged, nothing started."""
        if not self.distributed:
            return device
        import torch
        import torch.distributed as torch_dist

        if timeout_seconds <= 0:
            raise InputError(f"--dist-timeout {timeout_seconds}: expected a number of seconds above 0")
        if device.startswith("cuda:"):
            raise InputError(f"--device {device}: under {self.launch.launcher} every rank would use that one GPU; "
                             f"use --device cuda (each rank takes cuda:LOCAL_RANK) or --device cpu")
        if device in ("auto", "cuda") and torch.cuda.is_available():
            if self.local_rank >= torch.cuda.device_count():
                raise InputError(f"rank {self.rank}: local rank {self.local_rank} but only "
                                 f"{torch.cuda.device_count()} CUDA device(s) on this machine")
            torch.cuda.set_device(self.local_rank)
            device = self.device = f"cuda:{self.local_rank}"
        backend = "nccl" if self.device.startswith("cuda") else "gloo"
        timeout = datetime.timedelta(seconds=timeout_seconds)
        options = {"init_method": self.launch.init_method, "rank": self.rank, "world_size": self.world_size} \
            if self.launch.init_method else {}
        self._collective("starting the process group", lambda: torch_dist.init_process_group(
            backend, timeout=timeout, **options))
        self._started = True
        # A CPU group that waits as long as the slowest rank's models take (--shard-models).
        self._patient_group = self._collective("starting the process group", lambda: torch_dist.new_group(
            backend="gloo", timeout=datetime.timedelta(seconds=MODEL_WAIT_SECONDS)))
        self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        return device

    def _failing(self) -> None:
        """This rank is on its way out with a RankFailure: a launcher's SIGTERM must not
        interrupt the one line it prints (torchrun still kills a rank that hangs)."""
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def _on_sigterm(self, signum, frame):
        self._failing()
        raise RankFailure(f"rank {self.rank} of {self.world_size}: stopped by SIGTERM (torchrun stops every rank once "
                          f"one has failed; so do scancel and kill); a rerun resumes from the cache")

    def close(self) -> None:
        """Leave the process group (after a last barrier, so no rank leaves while another
        still sends)."""
        if not self._started:
            return
        import torch.distributed as torch_dist

        self.barrier()
        torch_dist.destroy_process_group()
        signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._started = False

    def __enter__(self) -> "Dist":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:  # after a failure the peers may be gone: no last barrier
            self.close()

    def _collective(self, what: str, operation):
        """Run one collective; any failure becomes a one-line RankFailure."""
        try:
            return operation()
        except RankFailure:
            raise
        except Exception as err:  # gloo and nccl raise RuntimeError subclasses of several kinds
            self._failing()
            raise RankFailure(f"rank {self.rank} of {self.world_size}: {what} failed ({short_reason(err)}); another rank "
                              f"has probably stopped; a rerun resumes from the cache") from None

    # --- work splitting ---------------------------------------------------------
    def shard(self, items):
        """This rank's strided slice `items[rank::world_size]` (a list, tuple, range or
        array): no padding, so the slices differ in length by at most one."""
        return items[self.rank::self.world_size] if self.distributed else items

    def workers_per_rank(self, workers: int) -> int:
        """DataLoader workers for this rank: `workers` shared by the ranks on this
        machine (at least one each where any were asked for)."""
        return workers if workers <= 0 else max(1, workers // self.local_world_size)

    # --- collectives ------------------------------------------------------------
    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.distributed:
            import torch.distributed as torch_dist

            self._collective("a barrier", torch_dist.barrier)

    def wait_for_all(self) -> None:
        """Wait, for as long as the slowest rank needs (up to MODEL_WAIT_SECONDS), until
        every rank gets here; a rank that dies still ends the wait at once."""
        if self.distributed:
            import torch.distributed as torch_dist

            self._collective("waiting for the other ranks", lambda: torch_dist.barrier(group=self._patient_group))

    def broadcast_mask(self, mask: Optional[np.ndarray], length: int) -> np.ndarray:
        """The main rank's boolean `mask` (of `length`), on every rank."""
        if not self.distributed:
            return mask
        import torch
        import torch.distributed as torch_dist

        tensor = torch.zeros(length, dtype=torch.uint8, device=self.device)
        if self.is_main:
            tensor.copy_(torch.from_numpy(np.asarray(mask, dtype=np.uint8)))
        self._collective("sharing what the cache lacks", lambda: torch_dist.broadcast(tensor, src=0))
        return tensor.cpu().numpy().astype(bool)

    def broadcast_rows(self, matrix: Optional[np.ndarray]) -> np.ndarray:
        """The main rank's float32 `matrix` [N, D] on every rank (the others pass None)."""
        if not self.distributed:
            return matrix
        import torch
        import torch.distributed as torch_dist

        shape = torch.zeros(2, dtype=torch.int64, device=self.device)
        if self.is_main:
            shape.copy_(torch.tensor(matrix.shape, dtype=torch.int64))
        self._collective("sharing results", lambda: torch_dist.broadcast(shape, src=0))
        tensor = torch.zeros(tuple(shape.tolist()), dtype=torch.float32, device=self.device)
        if self.is_main:
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)))
        self._collective("sharing results", lambda: torch_dist.broadcast(tensor, src=0))
        return tensor.cpu().numpy()

    def _all_gather_ints(self, values: Sequence[int], what: str) -> np.ndarray:
        """[world_size, len(values)] int64: every rank's `values`."""
        import torch
        import torch.distributed as torch_dist

        mine = torch.tensor(list(values), dtype=torch.int64, device=self.device)
        every = [torch.zeros_like(mine) for _ in range(self.world_size)]
        self._collective(what, lambda: torch_dist.all_gather(every, mine))
        return torch.stack(every).cpu().numpy()

    def _gather_padded(self, tensor, rows: int, what: str, to_all: bool = False):
        """Every rank's `tensor` (its first dimension padded to `rows`), in rank order: on
        the main rank (None elsewhere), or on every rank with `to_all`."""
        import torch
        import torch.distributed as torch_dist

        padded = torch.zeros((rows, *tensor.shape[1:]), dtype=tensor.dtype, device=self.device)
        padded[:len(tensor)] = tensor.to(self.device)
        received = [torch.zeros_like(padded) for _ in range(self.world_size)] if self.is_main or to_all else None
        if to_all:
            self._collective(what, lambda: torch_dist.all_gather(received, padded))
        else:
            self._collective(what, lambda: torch_dist.gather(padded, received, dst=0))
        return received

    def _exchange_bytes(self, data: np.ndarray, what: str, to_all: bool) -> Optional[List[np.ndarray]]:
        """Every rank's uint8 array, in rank order, on the main rank (None elsewhere) or
        on every rank: sizes first, then one padded exchange."""
        import torch

        sizes = self._all_gather_ints([len(data)], what)[:, 0]
        received = self._gather_padded(torch.from_numpy(np.ascontiguousarray(data)), int(sizes.max()), what, to_all)
        if received is None:
            return None
        return [tensor[:size].cpu().numpy() for tensor, size in zip(received, sizes.tolist())]

    def all_gather_arrays(self, array: np.ndarray) -> List[np.ndarray]:
        """Every rank's 1-D `array` (any fixed-size dtype, lengths may differ), in rank
        order, on every rank."""
        array = np.ascontiguousarray(array)
        if not self.distributed:
            return [array]
        parts = self._exchange_bytes(array.view(np.uint8), "sharing tokens", to_all=True)
        return [part.view(array.dtype) for part in parts]

    def gather_rows(self, local_rows, indices, total: int, out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """Every rank's rows in one float32 matrix [total, D] on the main rank, row
        `indices[k]` holding `local_rows[k]` (NaN where no rank sent one; `out` is filled
        when given); None on the other ranks, and None everywhere when no rank has a row.
        Ranks may hold different numbers of rows, none included."""
        collector = RowCollector(self, total, out)
        collector.add(indices, local_rows)
        return collector.finish()

    def gather_json(self, payload: Any) -> Optional[List[Any]]:
        """Every rank's JSON-serialisable `payload`, in rank order, on the main rank (as
        UTF-8 bytes in tensors); None elsewhere."""
        if not self.distributed:
            return [payload]
        data = np.frombuffer(json.dumps(payload, allow_nan=True).encode("utf-8"), dtype=np.uint8).copy()
        received = self._exchange_bytes(data, "gathering results", to_all=False)
        return None if received is None else [json.loads(part.tobytes()) for part in received]


SOLO = Dist()  # the one-process view: what the engine uses unless told otherwise


class RowCollector:
    """Rows computed by this rank, on their way to one [total, D] float32 matrix on the
    main rank: the main rank writes its own straight into the matrix (allocated with the
    first row, NaN elsewhere), the others keep theirs until `finish` sends them, in
    chunks of GATHER_CHUNK_BYTES per rank. With one process this is exactly filling
    the matrix in place."""

    def __init__(self, dist: Dist, total: int, out: Optional[np.ndarray] = None):
        self.dist, self.total, self.matrix = dist, total, out
        self._indices: List[np.ndarray] = []
        self._rows: List[np.ndarray] = []

    def add(self, indices, rows) -> None:
        """Rows `rows[k]` of matrix rows `indices[k]`."""
        rows = np.asarray(rows, dtype=np.float32)
        if self.dist.is_main:
            if len(rows) == 0:
                return
            if self.matrix is None:
                self.matrix = np.full((self.total, rows.shape[1]), np.nan, dtype=np.float32)
            self.matrix[indices] = rows
        else:
            self._indices.append(np.asarray(indices, dtype=np.int64))
            self._rows.append(rows)

    def finish(self) -> Optional[np.ndarray]:
        """The matrix on the main rank (None when no rank had a row); None elsewhere."""
        dist = self.dist
        if not dist.distributed:
            return self.matrix
        import torch

        indices = np.concatenate(self._indices) if self._indices else np.zeros(0, np.int64)
        rows = np.concatenate(self._rows) if self._rows else None
        width = rows.shape[1] if len(indices) else (self.matrix.shape[1] if self.matrix is not None else 0)
        shapes = dist._all_gather_ints([len(indices), width], "gathering embeddings")
        longest, width = int(shapes[:, 0].max()), int(shapes[:, 1].max())
        if width == 0:
            return self.matrix if dist.is_main else None
        if dist.is_main and self.matrix is None:
            self.matrix = np.full((self.total, width), np.nan, dtype=np.float32)
        chunk = max(1, GATHER_CHUNK_BYTES // (4 * width))
        for start in range(0, longest, chunk):
            size = min(chunk, longest - start)
            part = torch.from_numpy(rows[start:start + size]) if len(indices) else torch.zeros(0, width)
            received_rows = dist._gather_padded(part, size, "gathering embeddings")
            received_indices = dist._gather_padded(torch.from_numpy(indices[start:start + size]), size,
                                                   "gathering embeddings")
            if dist.is_main:
                for rank in range(1, dist.world_size):
                    count = max(0, min(size, int(shapes[rank, 0]) - start))
                    self.matrix[received_indices[rank][:count].cpu().numpy()] = received_rows[rank][:count].cpu().numpy()
        return self.matrix if dist.is_main else None
