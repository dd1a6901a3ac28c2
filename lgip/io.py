"""Files and errors, for every script: the error a user sees (FILE:LINE: what is wrong),
atomic writes that keep what is at an output path (links, devices, modes), the checks
every output passes before any work, JSONL streaming, image paths. Standard library
only, so the data-preparation scripts load no numerical library through it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import sys
import tempfile
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, Tuple


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


# --- writing outputs ----------------------------------------------------------------
#
# Every file a script writes goes through `atomic_output`, and every output path is
# checked by `check_output_path` before any work, so an output can never cost an input,
# a link or a device, and an unwritable place fails in the first second, not after an
# hour of encoding.

# Names that stand for an open descriptor of this process: writing them means writing
# that descriptor (sharing its offset), never replacing what it points at.
_DESCRIPTOR_NAME = re.compile(r"/dev/(?P<std>stdout|stderr)|/dev/fd/(?P<fd>\d+)"
                              r"|/proc/(?P<pid>self|\d+)/fd/(?P<pfd>\d+)")
_STD_DESCRIPTORS = {"stdout": 1, "stderr": 2}
# Errors of a write that a user fixes by freeing space or choosing other storage.
_FULL_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
_MAX_LINK_HOPS = 40


def _umask_by_setting() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FALLBACK_UMASK = _umask_by_setting()  # at import, before any thread exists


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it
    (/proc/self/status); elsewhere the value read once at import."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _FALLBACK_UMASK


def _descriptor_of(path: str) -> Optional[int]:
    """The file descriptor `path` names (/dev/stdout, /dev/fd/N, /proc/self/fd/N), also
    when reached through the user's own symlinks; None for any other path."""
    current = os.path.abspath(path)
    for _hop in range(_MAX_LINK_HOPS):
        match = _DESCRIPTOR_NAME.fullmatch(current)
        if match:
            if match["std"]:
                return _STD_DESCRIPTORS[match["std"]]
            if match["fd"]:
                return int(match["fd"])
            if match["pid"] == "self" or int(match["pid"]) == os.getpid():
                return int(match["pfd"])
            return None
        if not os.path.islink(current):
            return None
        current = os.path.join(os.path.dirname(current), os.readlink(current))
        current = os.path.normpath(current)
    return None


def _is_special(path: str) -> bool:
    """True when `path` exists and (links followed) is a device, FIFO or socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def is_stream(path: str) -> bool:
    """True for an output written in place, never replaced: a device, FIFO or socket, or
    a descriptor name (/dev/stdout, /dev/fd/N)."""
    return _descriptor_of(path) is not None or _is_special(path)


def _storage_error(path: str, err: OSError) -> InputError:
    return InputError(f"{path}: could not be written ({err.strerror or err})")


@contextlib.contextmanager
def _direct_output(path: str, descriptor: Optional[int], mode: str, text_options: Dict[str, Any]):
    """Write into a descriptor or a device/FIFO in place. A reader that goes away (a
    closed pipe) ends the writing quietly: the run's other outputs still get written."""
    for stream in (sys.stdout, sys.stderr):  # what was printed comes first
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        fd = os.dup(descriptor) if descriptor is not None else os.open(path, os.O_WRONLY)
    except OSError as err:
        raise _storage_error(path, err) from None
    try:
        with os.fdopen(fd, mode, **text_options) as handle:
            yield handle
    except BrokenPipeError:
        pass
    except OSError as err:
        if err.filename is None and err.errno in _FULL_STORAGE_ERRNOS:
            raise _storage_error(path, err) from None
        raise


@contextlib.contextmanager
def atomic_output(path: str, mode: str = "w", encoding: str | None = "utf-8"):
    """Open `path` for writing and make what the block writes its content.

    A regular file (new, or reached through symlinks, which stay) is written to a
    temporary file beside the target and renamed onto it only when the block finishes
    without an exception, so a stopped run leaves no half-written output and never
    damages the file that was there. A replaced file keeps its mode; a new one gets
    0o666 minus the umask, like any file a user writes. A device, FIFO or socket, and a
    descriptor name (/dev/stdout, /dev/fd/N), are written in place, never replaced.
    Wrappers may close the handle they are given (a TextIOWrapper does); the data is
    still synced. A storage failure (no space, read-only) is an InputError naming the
    path."""
    binary = "b" in mode
    text_options = {} if binary else {"encoding": encoding, "newline": "\n"}
    if is_stream(path):
        with _direct_output(path, _descriptor_of(path), mode, text_options) as handle:
            yield handle
        return
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".part", dir=folder)
    except OSError as err:
        raise _storage_error(path, err) from None
    sync_fd = os.dup(fd)  # syncs the data even when a wrapper has closed the handle
    try:
        try:
            os.fchmod(sync_fd, stat.S_IMODE(os.stat(target).st_mode))
        except FileNotFoundError:
            os.fchmod(sync_fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, **text_options) as handle:
            try:
                yield handle
                if not handle.closed:
                    handle.flush()
            except OSError as err:
                # A write that failed for want of space names no file; say which one.
                if err.filename is None and err.errno in _FULL_STORAGE_ERRNOS:
                    raise _storage_error(path, err) from None
                raise
        try:
            os.fsync(sync_fd)
            os.replace(tmp_path, target)
        except OSError as err:
            raise _storage_error(path, err) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise
    finally:
        os.close(sync_fd)


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


def _nearest_existing(path: str) -> str:
    """`path` itself or the closest ancestor of it that exists."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _probe_writable(folder: str) -> Optional[str]:
    """None when a file can be created (and removed) in `folder`; otherwise why not.
    Creating one is the only test that read-only mounts, /proc and root all answer
    truthfully (os.access says yes to root everywhere)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".lgip-write-test-", dir=folder)
    except OSError as err:
        return err.strerror or str(err)
    os.close(fd)
    os.remove(probe)
    return None


def refuse_inputs(path: str, inputs: Iterable[str], flag: str) -> None:
    """InputError when the existing file `path` is one of `inputs` (the same file, also
    through symlinks or hard links): writing it would destroy that input."""
    try:
        written = os.stat(path)
    except OSError:
        return  # nothing there yet, so it is no input
    for input_path in inputs:
        try:
            read = os.stat(input_path)
        except OSError:
            continue
        if (read.st_dev, read.st_ino) == (written.st_dev, written.st_ino):
            named = "" if os.path.abspath(input_path) == os.path.abspath(path) else f" {input_path}"
            raise InputError(f"{flag} {path}: output path is the input file{named}; writing it would destroy "
                             f"it, choose another path")


def check_output_path(path: str, inputs: Iterable[str] = (), flag: str = "--output", folder: bool = False) -> None:
    """Refuse, before any work, an output that could not be written or would destroy
    an input: a folder where a file goes (or a file, device or FIFO where a folder
    goes), a path under a regular file, a place where no file can be created (read-only
    storage, /proc, no permission), or one of `inputs`. Each refusal is one InputError
    naming the flag, the path and what is wrong. A device, FIFO or descriptor name
    (/dev/null, /dev/stdout) is fine for a file: it is written in place."""
    label = f"{flag} {path}"
    if not path:
        raise InputError(f"{flag}: the path is empty")
    if _descriptor_of(path) is not None:
        if folder:
            raise InputError(f"{label}: names an open stream, not a folder")
        return
    if os.path.exists(path):
        mode = os.stat(path).st_mode
        if folder and not stat.S_ISDIR(mode):
            kind = "a file" if stat.S_ISREG(mode) else "a device or pipe"
            raise InputError(f"{label}: is {kind}, not a folder")
        if not folder and stat.S_ISDIR(mode):
            raise InputError(f"{label}: is a folder; name a file (inside it, for example)")
        if not folder and not stat.S_ISREG(mode):
            if not os.access(path, os.W_OK):
                raise InputError(f"{label}: is a device or pipe this user cannot write")
            return
        if not folder:
            refuse_inputs(path, inputs, flag)
    elif folder and os.path.islink(path):
        raise InputError(f"{label}: is a symlink to {os.path.realpath(path)}, which does not exist")
    target = os.path.realpath(path)
    place = _nearest_existing(target if folder else os.path.dirname(target))
    if not os.path.isdir(place):
        raise InputError(f"{label}: {place} is a file, not a folder, so nothing can be written under it")
    problem = _probe_writable(place)
    if problem:
        raise InputError(f"{label}: nothing can be written in {place} ({problem}); choose a writable place")


def check_distinct_outputs(outputs: Sequence[Tuple[str, Optional[str]]]) -> None:
    """InputError when two of a run's outputs, [(flag, path)], name the same file: the
    second would replace the first. Streams (/dev/null, /dev/stdout) may be shared."""
    seen: Dict[str, str] = {}
    for flag, path in outputs:
        if not path or is_stream(path):
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise InputError(f"{flag} {path}: {seen[key]} is written there too; give each output its own path")
        seen[key] = f"{flag} {path}"


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
