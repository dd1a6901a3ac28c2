"""Files and errors, for every script: the error a user sees (FILE:LINE: what is wrong),
atomic writes, JSONL streaming, image paths. Standard library only, so the
data-preparation scripts load no numerical library through it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Any, Dict, Iterator, Tuple


class InputError(Exception):
    """A problem with what the user gave us. The message names the file, the line
    (where there is one) and what is wrong; scripts print it and exit with code 2."""


class RankFailure(Exception):
    """A run of several ranks (torchrun, srun) cannot go on: another rank stopped or a
    collective timed out. The message is one line naming this rank; scripts print it and
    exit with code 1, and a rerun resumes from the embedding cache."""


def where(path: str, line_no: int | None = None) -> str:
    """`path:line` (or just `path`) as error messages start."""
    return f"{path}:{line_no}" if line_no is not None else str(path)




@contextlib.contextmanager
def atomic_output(path: str, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file beside `path` for writing; rename it onto `path` only when
    the block finishes without an exception, so a stopped run leaves no half-written
    output and never damages the file that was there."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part", dir=folder)
    try:
        kwargs = {"encoding": encoding, "newline": "\n"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


def write_json(path: str, payload: Any) -> None:
    """Write `payload` as indented JSON, atomically."""
    with atomic_output(path) as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def file_sha256(path: str, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def refuse_same_path(input_path: str, output_path: str) -> None:
    """Writing onto the input would destroy it; refuse before anything is read."""
    if os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise InputError(f"{output_path}: output path is the input file; choose another --output")
    if os.path.abspath(input_path) == os.path.abspath(output_path):
        raise InputError(f"{output_path}: output path is the input file; choose another --output")


def iter_jsonl(path: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """Yield (line number, record) for each non-blank line of a JSONL file, streaming.

    Raises InputError naming the file and line for a missing file, bytes that are not
    UTF-8, a line that is not JSON, a line that is not a JSON object, or a file with
    no records at all."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    seen_record = False
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{where(path, line_no)}: not UTF-8 text ({err.reason} at byte {err.start})") from None
            if line_no == 1 and line.startswith("\ufeff"):
                line = line[1:]
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{where(path, line_no)}: not valid JSON ({err.msg}, column {err.colno})") from None
            if not isinstance(record, dict):
                raise InputError(f"{where(path, line_no)}: expected a JSON object, got {type(record).__name__}")
            seen_record = True
            yield line_no, record
    if not seen_record:
        raise InputError(f"{path}: the file holds no records")


def check_captions(record: Dict[str, Any], path: str, line_no: int) -> list:
    """Return the record's `orig_captions`, or raise InputError if it is missing or
    is not a list of strings."""
    captions = record.get("orig_captions")
    if captions is None:
        raise InputError(f"{where(path, line_no)}: record has no 'orig_captions'")
    if not isinstance(captions, list):
        raise InputError(f"{where(path, line_no)}: 'orig_captions' must be a list of strings, got {type(captions).__name__}")
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise InputError(
                f"{where(path, line_no)}: 'orig_captions'[{index}] must be a string, got {type(caption).__name__}"
            )
    return captions



def resolve_image_path(image_path: str, jsonl_path: str) -> str:
    """A relative image path is relative to the JSONL's folder (the release's layout)."""
    if os.path.isabs(image_path):
        return image_path
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(jsonl_path)), image_path))
