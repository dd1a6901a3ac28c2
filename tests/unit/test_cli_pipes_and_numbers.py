"""The command line's shared parts (lgip/cli.py): printing never fails a run when the
reader of stdout went away, and the argparse types every numeric flag takes refuse what
makes no sense with one clear message."""
import argparse
import io
import os
import stat
import sys

import pytest

from lgip.cli import (PipeSafeStream, nonnegative_float, nonnegative_int, positive_float, positive_int, run_cli)
from lgip.io import InputError, write_json


class BrokenStream(io.TextIOBase):
    """A stdout whose reader has gone: every write and flush raises BrokenPipeError."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_is_pointed_at_devnull_and_writing_goes_on():
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_end, "w")), encoding="utf-8")
    safe = PipeSafeStream(stream)
    for _ in range(2000):  # far more than the pipe and the buffer hold
        safe.write("a line of the table\n")
    safe.flush()
    assert safe.broken and stat.S_ISCHR(os.fstat(write_end).st_mode)  # now /dev/null
    stream.close()  # the buffered rest goes to /dev/null too, without an error


def test_run_cli_writes_every_file_when_stdout_is_closed(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", BrokenStream())
    written = tmp_path / "after_printing.json"

    def main():
        for number in range(100):
            print(f"row {number}")
        write_json(str(written), {"done": True})
        print("wrote it")

    run_cli(main)  # returns normally: exit code 0
    assert written.exists()
    assert isinstance(sys.stdout, BrokenStream)  # restored after the run


def test_run_cli_turns_input_errors_into_one_line_and_exit_2(capsys):
    def main():
        raise InputError("data.jsonl:3: what is wrong")

    with pytest.raises(SystemExit) as caught:
        run_cli(main)
    assert caught.value.code == 2
    assert capsys.readouterr().err == "error: data.jsonl:3: what is wrong\n"


@pytest.mark.parametrize("kind, good, bad, what", [
    (positive_int, ["1", "7", "+3"], ["0", "-1", "1.5", "x", ""], "a whole number of at least 1"),
    (nonnegative_int, ["0", "5"], ["-1", "-0.5", "two"], "a whole number of at least 0"),
    (positive_float, ["0.5", "1e-3", "60"], ["0", "-1", "nan", "inf", "-inf", "x"], "a finite number above 0"),
    (nonnegative_float, ["0", "0.25"], ["-1", "nan", "inf", "x"], "a finite number of at least 0"),
])
def test_numeric_types_accept_sense_and_refuse_the_rest_clearly(kind, good, bad, what, capsys):
    parser = argparse.ArgumentParser(prog="script.py")
    parser.add_argument("--value", type=kind)
    for text in good:
        assert parser.parse_args(["--value", text]).value == float(text)
    for text in bad:
        with pytest.raises(SystemExit) as caught:
            parser.parse_args([f"--value={text}"])
        assert caught.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert errors == [f"script.py: error: argument --value: expected {what}, got {text!r}"]
