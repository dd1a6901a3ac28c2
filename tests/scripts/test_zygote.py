"""tests/zygote.py, which most script runs in the suite start from, against a fresh
interpreter: the same exit codes, the same output, the same files."""
import json

import pytest

from tests.helpers import REPO, run_script

FRESH = {"PYTHONHASHSEED": "0"}  # any env_extra makes run_script start a real `python`


@pytest.mark.parametrize("args", [
    ["--help"],
    ["--input", "no_such_file.jsonl", "--quiet"],
    ["--input", str(REPO / "tests" / "data" / "base_sample.jsonl"), "--bootstrap", "-1"],
])
def test_a_zygote_run_prints_and_exits_as_a_fresh_interpreter(args):
    zygote, fresh = run_script("run_lgip_multi.py", *args), run_script("run_lgip_multi.py", *args, env_extra=FRESH)
    assert (zygote.returncode, zygote.stdout, zygote.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert zygote.returncode in (0, 2) and (zygote.stdout or zygote.stderr)


def test_a_zygote_run_writes_the_same_file(tiny, tmp_path):
    outputs = []
    for name, extra in (("zygote", None), ("fresh", FRESH)):
        output = tmp_path / f"{name}.jsonl"
        result = run_script("diff_gen_caption.py", "--input", tiny.base, "--output", output, env_extra=extra)
        assert result.returncode == 0, result.stderr
        outputs.append(output.read_bytes())
        assert f"{output}" in result.stdout
    assert outputs[0] == outputs[1] and json.loads(outputs[0].splitlines()[0])
