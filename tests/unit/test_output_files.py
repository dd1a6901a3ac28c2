"""Writing outputs (lgip/io.py): what is at an output path is never replaced by the wrong
thing (a symlink stays a link, a device or pipe is written in place), new files follow
the umask and replaced ones keep their mode, a wrapper that closes the handle loses
nothing, and `check_output_path` refuses every unwritable or destructive output before
any work, with one message naming the flag and the path."""
import contextlib
import gzip
import io
import os
import stat
import threading

import pytest

from lgip.io import (InputError, atomic_output, check_distinct_outputs, check_output_path, current_umask,
                     write_json)


@contextlib.contextmanager
def umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def make_device(path):
    """A private character device equal to /dev/null (1, 3) when this user may make one
    (root in most containers), else a FIFO with a reader draining it; returns (kind,
    reader thread or None, what the reader got)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        return "device", None, None
    except (PermissionError, OSError):
        os.mkfifo(path)
        received = []
        reader = threading.Thread(target=lambda: received.append(open(path, "rb").read()), daemon=True)
        reader.start()
        return "fifo", reader, received


def is_kind(path, kind):
    mode = os.lstat(path).st_mode
    return stat.S_ISCHR(mode) if kind == "device" else stat.S_ISFIFO(mode)


def leftovers(folder):
    return [name for name in os.listdir(folder) if name.endswith(".part")]


# --- the primitive: atomic_output ------------------------------------------------------

@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_follow_the_umask(tmp_path, mask, expected):
    with umask(mask):
        assert current_umask() == mask
        write_json(str(tmp_path / "new.json"), {"a": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == expected


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755])
def test_a_replaced_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "old.json"
    path.write_text("old")
    os.chmod(path, mode)
    with umask(0o022):
        write_json(str(path), {"new": True})
    assert stat.S_IMODE(os.stat(path).st_mode) == mode and '"new": true' in path.read_text()


@pytest.mark.parametrize("relative", [False, True])
def test_a_symlink_stays_a_link_and_its_target_gets_the_output(tmp_path, relative):
    target_folder = tmp_path / "real"
    target_folder.mkdir()
    target = target_folder / "out.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.json"
    os.symlink(os.path.relpath(target, tmp_path) if relative else target, link)
    chain = tmp_path / "chain.json"  # a link to the link
    os.symlink(link, chain)
    write_json(str(chain), {"through": "links"})
    assert os.path.islink(link) and os.path.islink(chain)
    assert os.readlink(chain) == str(link)
    assert '"through": "links"' in target.read_text()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert leftovers(tmp_path) == [] and leftovers(target_folder) == []  # the temporary file sat beside the target


def test_a_dangling_symlink_gets_its_target_created(tmp_path):
    link = tmp_path / "link.csv"
    os.symlink(tmp_path / "made.csv", link)
    with atomic_output(str(link)) as handle:
        handle.write("a,b\n")
    assert os.path.islink(link) and (tmp_path / "made.csv").read_text() == "a,b\n"


def test_a_device_or_fifo_is_written_in_place(tmp_path):
    path = tmp_path / "null"
    kind, reader, received = make_device(str(path))
    write_json(str(path), {"x": 1})
    if reader is not None:
        reader.join(5)
        assert received and b'"x": 1' in received[0]
    assert is_kind(path, kind)
    with atomic_output(str(path), "wb") as handle:  # binary too, e.g. a plot
        handle.write(b"\x89PNG")
    assert is_kind(path, kind)


def test_a_descriptor_name_writes_into_that_descriptor(tmp_path):
    read_end, write_end = os.pipe()
    try:
        write_json(f"/dev/fd/{write_end}", {"to": "pipe"})
        write_json(f"/proc/self/fd/{write_end}", {"and": "again"})
        os.fstat(write_end)  # still open: the writer used its own duplicate
    finally:
        os.close(write_end)
    text = os.read(read_end, 1 << 16).decode()
    os.close(read_end)
    assert '"to": "pipe"' in text and '"and": "again"' in text


def test_a_reader_that_went_away_ends_a_stream_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with atomic_output(f"/dev/fd/{write_end}") as handle:
            handle.write("x" * 100_000)  # more than a pipe holds: the write itself breaks
    finally:
        os.close(write_end)


def test_a_full_device_is_one_input_error():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with pytest.raises(InputError, match=r"^/dev/full: could not be written \(No space left on device\)"):
        write_json("/dev/full", {"x": 1})


@pytest.mark.parametrize("compress", [False, True])
def test_wrappers_that_close_the_handle_lose_nothing(tmp_path, compress):
    """The class of `--dump-pairs out.csv` crashing: a TextIOWrapper closes the file it
    wraps when it is closed."""
    path = tmp_path / ("out.csv.gz" if compress else "out.csv")
    with atomic_output(str(path), "wb") as handle:
        with contextlib.ExitStack() as stack:
            binary = stack.enter_context(gzip.GzipFile(fileobj=handle, mode="wb", mtime=0)) if compress else handle
            text = stack.enter_context(io.TextIOWrapper(binary, encoding="utf-8", newline=""))
            text.write("a,b\r\n1,2\r\n")
    data = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
    assert data == b"a,b\r\n1,2\r\n" and leftovers(tmp_path) == []


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "keep.json"
    path.write_text("precious")
    with pytest.raises(RuntimeError):
        with atomic_output(str(path)) as handle:
            handle.write("half")
            raise RuntimeError("stopped")
    assert path.read_text() == "precious" and leftovers(tmp_path) == []


# --- the preflight: check_output_path --------------------------------------------------

def refusal(path, inputs=(), flag="--out", folder=False):
    with pytest.raises(InputError) as caught:
        check_output_path(str(path), [str(p) for p in inputs], flag, folder=folder)
    message = str(caught.value)
    assert message.startswith(f"{flag} {path}: ") and "\n" not in message
    return message


def test_fine_outputs_pass(tmp_path):
    check_output_path(str(tmp_path / "new" / "deeper" / "out.csv"), [], "--csv")  # folders are made on writing
    check_output_path(str(tmp_path / "made" / "later"), [], "--output-dir", folder=True)
    check_output_path("/dev/null", [], "--csv")
    check_output_path("/dev/stdout", [], "--csv")
    existing = tmp_path / "old.csv"
    existing.write_text("x")
    check_output_path(str(existing), [str(tmp_path / "other.jsonl")], "--csv")


def test_the_wrong_kind_of_thing_is_refused(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    file = tmp_path / "file.txt"
    file.write_text("x")
    assert "is a folder" in refusal(folder)
    assert "is a file, not a folder" in refusal(file, folder=True)
    assert "not a folder" in refusal("/dev/null", folder=True)
    assert "open stream" in refusal("/dev/stdout", folder=True)
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", dangling)
    assert "does not exist" in refusal(dangling, folder=True)


@pytest.mark.parametrize("folder", [False, True])
def test_a_path_under_a_regular_file_is_refused(tmp_path, folder):
    file = tmp_path / "file.json"
    file.write_text("{}")
    assert f"{file} is a file, not a folder" in refusal(file / "sub" / "out.csv", folder=folder)


@pytest.mark.parametrize("folder", [False, True])
def test_places_nothing_can_be_written_in_are_refused_even_for_root(folder):
    """/proc refuses new files to every user, root included (chmod does not stop root)."""
    assert "nothing can be written in /proc" in refusal("/proc/lgip-test/out.csv", folder=folder)


def test_an_unwritable_folder_is_refused_for_an_ordinary_user(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        if os.geteuid() == 0:  # root writes through 0o555; the /proc and read-only mount tests cover root
            check_output_path(str(locked / "out.csv"), [], "--csv")
        else:
            assert "Permission denied" in refusal(locked / "out.csv")
    finally:
        os.chmod(locked, 0o755)


def test_an_output_that_is_an_input_is_refused_however_it_is_named(tmp_path):
    data = tmp_path / "input.jsonl"
    data.write_text('{"a": 1}\n')
    link = tmp_path / "link.jsonl"
    os.symlink(data, link)
    hard = tmp_path / "hard.jsonl"
    os.link(data, hard)
    for name in (data, link, hard, tmp_path / "." / "input.jsonl"):
        assert "output path is the input file" in refusal(name, [data])
    assert "output path is the input file" in refusal(data, [link])  # the input named through a link
    assert data.read_text() == '{"a": 1}\n'


def test_two_outputs_may_not_share_a_file(tmp_path):
    check_distinct_outputs([("--csv", "/dev/null"), ("--plot-types", "/dev/null"), ("--a", str(tmp_path / "a"))])
    link = tmp_path / "b_link"
    os.symlink(tmp_path / "b", link)
    with pytest.raises(InputError, match=r"^--plot-types .*: --csv .* is written there too"):
        check_distinct_outputs([("--csv", str(tmp_path / "b")), ("--plot-types", str(link))])
