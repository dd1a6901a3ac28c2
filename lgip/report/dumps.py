"""Reading `--dump-pairs` files in chunks of columns, fast, without loading one whole.

Formats: CSV, gzip CSV (`.gz`; inflated on a helper thread while the previous block is
parsed, since zlib lets go of the GIL) and Parquet (`.parquet`; needs pyarrow). In every
format `line`, `caption_index` and `image_id` come as text, the other columns as written.

`map_chunks(path, function)` applies `function(columns, ...)` to every chunk in order. A
large CSV file, given a `worker_pool()`, is cut into blocks of whole records (a block ends
at a newline with an even number of quote characters before it, so never inside a quoted
caption) that forked worker processes parse and reduce, while this process only inflates,
cuts and merges: parsing CSV, the cost that dominates, then scales with the cores.
"""
from __future__ import annotations

import collections
import contextlib
import csv
import gc
import io
import itertools
import multiprocessing
import os
import queue
import sys
import threading
import zlib
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from lgip.engine.dump import PairDump
from lgip.io import InputError, where

DUMP_COLUMNS = tuple(PairDump.COLUMNS)
REQUIRED_COLUMNS = ("model_tag", "line", "image_path", "caption_index", "caption", "variant_kind", "variant_text", "gap")
CHUNK_ROWS = 1 << 16  # rows per chunk when one process reads: numpy pays off, a chunk stays a few MB
BLOCK_BYTES = 1 << 20  # bytes read (or inflated) at a time: a block of ~5 MB of text once inflated
INFLATE_QUEUE = 4  # inflated blocks waiting to be parsed, at most
PARALLEL_MIN_BYTES = 32 << 20  # smaller files are read in this process: starting workers costs more
MAX_WORKERS = 8  # one process inflates and merges; past this many parsers it is the bottleneck
IN_FLIGHT_BLOCKS = 2 * MAX_WORKERS  # handed out and not yet merged: bounds the memory (~70 MB)

Columns = Dict[str, Sequence]


class RowError(Exception):
    """A bad value `offset` rows into a chunk; the reader turns it into an InputError
    naming the file and the line."""

    def __init__(self, offset: int, message: str):
        super().__init__(offset, message)
        self.offset, self.message = offset, message


def float_column(values: Sequence, name: str) -> np.ndarray:
    """`values` as float64; RowError at the first that is not a number."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        for offset, value in enumerate(values):
            try:
                float(value)
            except (TypeError, ValueError):
                raise RowError(offset, f"{name} {value!r} is not a number") from None
        raise


def column_positions(header: Sequence[str], path: str) -> Dict[str, int]:
    """{column name: position} of the dump's columns in `header`; InputError when one the
    report needs is missing."""
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise InputError(f"{where(path, 1)}: no column {', '.join(repr(m) for m in missing)}; expected a "
                         f"--dump-pairs file with the columns {', '.join(DUMP_COLUMNS)}")
    return {name: header.index(name) for name in DUMP_COLUMNS if name in header}


def rows_to_columns(rows: list, positions: Dict[str, int], width: int) -> Columns:
    """Parsed CSV rows -> {column: values}; RowError at a row of the wrong width."""
    if set(map(len, rows)) != {width}:
        offset = next(i for i, row in enumerate(rows) if len(row) != width)
        raise RowError(offset, f"{len(rows[offset])} fields, expected {width} as in the header")
    columns = list(zip(*rows))  # the fastest transposition in CPython
    return {name: columns[position] for name, position in positions.items()}


# ---------------------------------------------------------------------------
# Bytes: inflating on a helper thread, cutting into whole records
# ---------------------------------------------------------------------------

def _inflated_blocks(path: str) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file in blocks that end at a newline, inflated by a
    helper thread while the caller works on the previous block. Concatenated gzip members
    are read one after another."""
    blocks: "queue.Queue" = queue.Queue(maxsize=INFLATE_QUEUE)
    stop = threading.Event()

    def inflate():
        try:
            with open(path, "rb") as raw:
                inflater, fed, pending, carry = zlib.decompressobj(16 + zlib.MAX_WBITS), False, b"", b""
                while not stop.is_set():
                    if inflater.eof:  # one gzip member ended; what follows starts the next
                        pending, fed = inflater.unused_data, False
                        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    pending = pending or raw.read(BLOCK_BYTES)
                    if not pending:
                        if fed and not inflater.eof:
                            raise EOFError("the gzip stream ends early (a truncated file?)")
                        break
                    data = carry + inflater.decompress(pending)
                    pending, fed = b"", True
                    cut = data.rfind(b"\n") + 1
                    carry = data[cut:]
                    if cut:
                        blocks.put(data[:cut])
                if carry and not stop.is_set():
                    blocks.put(carry)
            blocks.put(None)
        except (OSError, EOFError, zlib.error) as err:
            blocks.put(err)

    worker = threading.Thread(target=inflate, name="lgip-inflate", daemon=True)
    worker.start()
    try:
        while True:
            block = blocks.get()
            if block is None:
                return
            if isinstance(block, Exception):
                raise block
            yield block
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # a worker blocked on a full queue wakes up and sees `stop`
                blocks.get_nowait()
        worker.join()


def _byte_blocks(path: str) -> Iterator[bytes]:
    if path.endswith(".gz"):
        yield from _inflated_blocks(path)
        return
    with open(path, "rb") as handle:
        yield from iter(lambda: handle.read(BLOCK_BYTES), b"")


def _record_end(data: bytes) -> int:
    """The position after the last newline of `data` that ends a CSV record (an even number
    of quote characters before it: a quoted field's quotes, doubled ones too, come in
    pairs); 0 when there is none."""
    end = data.rfind(b"\n")
    while end >= 0 and data.count(b'"', 0, end) % 2:
        end = data.rfind(b"\n", 0, end)
    return end + 1


def _record_blocks(path: str) -> Iterator[bytes]:
    """The file's bytes in blocks of whole CSV records."""
    carry = b""
    for data in _byte_blocks(path):
        data = carry + data
        cut = _record_end(data)
        carry = data[cut:]
        if cut:
            yield data[:cut]
    if carry:
        yield carry


def _block_lines(block: bytes) -> io.StringIO:
    # A block ends at a newline, never inside a UTF-8 sequence; newline="" splits lines as
    # open(path, newline="") does, and csv.reader joins a quoted field's line breaks.
    return io.StringIO(block.decode("utf-8"), newline="")


# ---------------------------------------------------------------------------
# Chunks in this process
# ---------------------------------------------------------------------------

def _csv_chunks(path: str, chunk_rows: int) -> Iterator[Tuple[int, Columns]]:
    with contextlib.ExitStack() as stack:
        if path.endswith(".gz"):  # every line passes through C code only: chain, map, StringIO
            blocks = stack.enter_context(contextlib.closing(_inflated_blocks(path)))
            lines = itertools.chain.from_iterable(map(_block_lines, blocks))
        else:
            lines = stack.enter_context(open(path, encoding="utf-8", newline=""))
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file; expected a --dump-pairs CSV with a header line")
        positions, first_row = column_positions(header, path), 1
        while True:
            rows = list(itertools.islice(reader, chunk_rows))
            if not rows:
                return
            try:
                columns = rows_to_columns(rows, positions, len(header))
            except RowError as err:
                raise InputError(f"{where(path, first_row + err.offset + 1)}: {err.message}") from None
            yield first_row, columns
            first_row += len(rows)


def _parquet_chunks(path: str, chunk_rows: int) -> Iterator[Tuple[int, Columns]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow); or dump the pairs "
                         f"to a .csv.gz file instead") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises its own error types for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    positions = column_positions(parquet.schema_arrow.names, path)
    first_row = 1
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(positions)):
        columns = batch.to_pydict()
        for name in ("line", "caption_index", "image_id"):  # integers there, text in a CSV: keys must match
            if name in columns:
                columns[name] = ["" if value is None else str(value) for value in columns[name]]
        yield first_row, columns
        first_row += batch.num_rows


def read_dump(path: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[Tuple[int, Columns]]:
    """Stream a --dump-pairs file as (number of the chunk's first data row, {column:
    values}), at most `chunk_rows` rows a chunk, in this process."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such --pairs file")
    if path.endswith(".parquet"):
        return _parquet_chunks(path, chunk_rows)
    return _guarded(path, _csv_chunks(path, chunk_rows))


def _guarded(path: str, chunks: Iterator) -> Iterator:
    """`chunks`, with a damaged file's low-level errors as one InputError naming it."""
    try:
        yield from chunks
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as err:
        raise InputError(f"{path}: not a readable --dump-pairs CSV ({err})") from None


# ---------------------------------------------------------------------------
# Chunks on worker processes
# ---------------------------------------------------------------------------

def _parallel(path: str) -> bool:
    """Whether map_chunks reads `path` on workers (given a pool)."""
    return not path.endswith(".parquet") and os.path.isfile(path) and os.path.getsize(path) >= PARALLEL_MIN_BYTES


@contextlib.contextmanager
def worker_pool(workers: Optional[int] = None, paths: Sequence[str] = ()):
    """A pool of forked worker processes for `map_chunks`, or None where there is no fork
    (then everything runs in this process) or `workers` < 2. Start it before any helper
    thread: a fork copies only the thread that calls it. Forked workers share this
    process's string-hash seed, so hash() of the same text agrees across them. None too
    when none of `paths` is large enough to be read on workers."""
    workers = min(MAX_WORKERS, os.cpu_count() or 1) if workers is None else workers
    if workers < 2 or not sys.platform.startswith("linux") or not any(map(_parallel, paths)):
        yield None
        return
    pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        yield pool
    finally:
        pool.terminate()  # results not collected (a search that stopped early) are not waited for
        pool.join()


def _block_task(block: bytes, positions: Dict[str, int], width: int, function: Callable, args: tuple):
    gc.disable()  # a block holds no reference cycles; the collector would only walk its rows
    rows = list(csv.reader(_block_lines(block)))
    return len(rows), function(rows_to_columns(rows, positions, width), *args)


def map_chunks(path: str, function: Callable[..., Any], args: tuple = (), pool=None,
               chunk_rows: int = CHUNK_ROWS) -> Iterator[Tuple[int, Any]]:
    """(number of the chunk's first data row, function(columns, *args)) for every chunk of
    the dump, in file order. On `pool`'s workers for a CSV file of PARALLEL_MIN_BYTES or
    more (a chunk is then a block of about BLOCK_BYTES); `function` and its results must
    pickle. A RowError it raises becomes an InputError naming the file and line."""
    if pool is None or not _parallel(path):
        for first_row, columns in read_dump(path, chunk_rows):
            try:
                yield first_row, function(columns, *args)
            except RowError as err:
                raise InputError(f"{where(path, first_row + err.offset + 1)}: {err.message}") from None
        return
    yield from _guarded(path, _parallel_chunks(path, function, args, pool))


def _parallel_chunks(path: str, function: Callable, args: tuple, pool) -> Iterator[Tuple[int, Any]]:
    blocks = _record_blocks(path)
    with contextlib.closing(blocks):
        first = next(blocks, b"")
        header_end = first.find(b"\n") + 1 or len(first)
        header = next(csv.reader([first[:header_end].decode("utf-8")]), None)
        if header is None:
            raise InputError(f"{path}: empty file; expected a --dump-pairs CSV with a header line")
        positions, width = column_positions(header, path), len(header)
        tasks = itertools.chain([first[header_end:]] if header_end < len(first) else [], blocks)
        pending: collections.deque = collections.deque()
        first_row = 1
        for block in itertools.chain(tasks, [None]):
            if block is not None:
                pending.append(pool.apply_async(_block_task, (block, positions, width, function, args)))
            while pending and (block is None or len(pending) >= IN_FLIGHT_BLOCKS):
                try:
                    rows, result = pending.popleft().get()
                except RowError as err:
                    raise InputError(f"{where(path, first_row + err.offset + 1)}: {err.message}") from None
                yield first_row, result
                first_row += rows
