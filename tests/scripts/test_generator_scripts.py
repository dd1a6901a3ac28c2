"""The three generators run as a user runs them: byte-for-byte agreement with the
release, determinism, summaries and bad input; and that the data-preparation scripts
never load torch."""
import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from lgip.perturb.paper import COLORS
from tests.helpers import DATA, GENERATORS, REPO, read_jsonl, run_script

# sha256 of the files the release's own diff_gen_caption.py and make_perturb_with_fliptypes.py
# wrote from tests/data/base_sample.jsonl (seed 42), run once beside this project.
RELEASE_SHA256 = {
    "diff_gen_caption.py": "3baaf6b7254b83238eee825ecd29c3bd6975f34ff2db91cf420e4810acc3cb4a",
    "make_perturb_with_fliptypes.py": "05a550c2ce0b758620e4701c64227ba2932dbe7fe81b94418ca024a5e5f7244f",
}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- whole files ------------------------------------------------------------------

@pytest.mark.parametrize("script", sorted(RELEASE_SHA256))
def test_output_is_byte_identical_to_the_release(tmp_path, script):
    output = tmp_path / "out.jsonl"
    run_script(script, "--input", DATA / "base_sample.jsonl", "--output", output, check=True)
    assert sha256(output) == RELEASE_SHA256[script]


@pytest.mark.parametrize("script", GENERATORS)
def test_identical_across_runs_and_hash_seeds(tmp_path, script):
    outputs = []
    for hash_seed in ["1", "2"]:
        output = tmp_path / f"out{hash_seed}.jsonl"
        run_script(script, "--input", DATA / "base_sample.jsonl", "--output", output,
                   env_extra={"PYTHONHASHSEED": hash_seed}, check=True)
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1]


def test_default_output_name_and_limit(tmp_path):
    base = tmp_path / "lgip_coco_native5_train2017.jsonl"
    shutil.copy(DATA / "base_sample.jsonl", base)
    result = run_script("rebuttal_enhanced_perturb_with_fliptypes.py", "--input", base, "--limit", 7, check=True)
    output = tmp_path / "rebuttal_enhanced_lgip_coco_native5_train2017_with_fliptypes__limit7.jsonl"
    records = read_jsonl(output)
    assert len(records) == 7
    assert "records:               7" in result.stdout
    first = records[0]
    assert list(first)[-7:] == ["same_caps", "diff_caps", "diff_caps_color", "diff_caps_number", "diff_caps_object",
                                "combined_caps", "same_caps_kind"]
    for key, paraphrases in first["same_caps"].items():
        assert len(first["same_caps_kind"][key]) == len(paraphrases) <= 6
        assert set(first["same_caps_kind"][key]) <= {"template", "prefix", "passive", "synonym"}
        for item in first["combined_caps"][key]:
            assert set(item) == {"text", "combined_type", "intermediate_para"}
            assert item["combined_type"] in {"para+color", "para+number", "para+object"}
        assert len(first["combined_caps"][key]) <= 6


def test_fliptypes_keys_and_types_partition_the_flips(tmp_path):
    output = tmp_path / "out.jsonl"
    run_script("make_perturb_with_fliptypes.py", "--input", DATA / "base_sample.jsonl", "--output", output, check=True)
    for record in read_jsonl(output):
        assert list(record)[-5:] == ["same_caps", "diff_caps", "diff_caps_color", "diff_caps_number", "diff_caps_object"]
        for key, flips in record["diff_caps"].items():
            typed = record["diff_caps_color"][key] + record["diff_caps_number"][key] + record["diff_caps_object"][key]
            assert sorted(typed) == sorted(flips)
            for text in record["diff_caps_color"][key]:
                assert any(colour in text.split() for colour in COLORS)


def test_summary_counts_match_the_file(tmp_path):
    output = tmp_path / "out.jsonl"
    result = run_script("make_perturb_with_fliptypes.py", "--input", DATA / "base_sample.jsonl", "--output", output,
                        check=True)
    records = read_jsonl(output)
    paraphrases = sum(len(v) for r in records for v in r["same_caps"].values())
    per_type = {t: sum(len(v) for r in records for v in r[f"diff_caps_{t}"].values()) for t in ["color", "number", "object"]}
    no_flip = sum(1 for r in records for v in r["diff_caps"].values() if not v)
    assert f"records:               {len(records)}" in result.stdout
    assert f"captions:              {5 * len(records)}" in result.stdout
    assert f"paraphrases:           {paraphrases}" in result.stdout
    assert f"color {per_type['color']}, number {per_type['number']}, object {per_type['object']}" in result.stdout
    assert f"captions with no flip: {no_flip}" in result.stdout


def test_hand_worked_record(tmp_path):
    base = tmp_path / "base.jsonl"
    base.write_text(json.dumps({"image_path": "x.jpg", "orig_captions": ["A man riding a wave."]}) + "\n")
    output = tmp_path / "out.jsonl"
    run_script("diff_gen_caption.py", "--input", base, "--output", output, check=True)
    record = read_jsonl(output)[0]
    # eight paraphrases remain after dropping the caption itself; six are sampled
    assert len(record["same_caps"]["0"]) == 6
    assert set(record["same_caps"]["0"]) <= {
        "a photo of A man riding a wave.", "an image of A man riding a wave.", "a picture of A man riding a wave.",
        "A man riding a wave. in the scene", "a scene showing A man riding a wave.",
        "In this image, A man riding a wave.", "In the picture, A man riding a wave.",
        "This image shows A man riding a wave."}
    assert record["diff_caps"] == {"0": []}


# --- bad input --------------------------------------------------------------------

BAD_INPUTS = {
    "not_json": (b'{"orig_captions": ["a dog"]}\n{oops\n', ":2: not valid JSON"),
    "no_captions": (b'{"image_path": "a.jpg"}\n', ":1: record has no 'orig_captions'"),
    "caption_not_string": (b'{"orig_captions": ["a dog", 3]}\n', ":1: 'orig_captions'[1] must be a string"),
    "captions_not_list": (b'{"orig_captions": "a dog"}\n', ":1: 'orig_captions' must be a list"),
    "not_object": (b'["a dog"]\n', ":1: expected a JSON object"),
    "empty": (b"\n\n", "holds no records"),
    "not_utf8": (b'{"orig_captions": ["a caf\xe9"]}\n', ":1: not UTF-8"),
}


@pytest.mark.parametrize("script", GENERATORS)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_error_and_leaves_nothing(tmp_path, script, case):
    content, expected = BAD_INPUTS[case]
    base = tmp_path / "base.jsonl"
    base.write_bytes(content)
    output = tmp_path / "out.jsonl"
    result = run_script(script, "--input", base, "--output", output)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(base) in lines[0] and expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.jsonl"]


def test_missing_input_and_output_equal_to_input(tmp_path):
    result = run_script("diff_gen_caption.py", "--input", tmp_path / "nope.jsonl", "--output", tmp_path / "o.jsonl")
    assert result.returncode == 2 and "nope.jsonl: no such file" in result.stderr
    base = tmp_path / "base.jsonl"
    shutil.copy(DATA / "base_sample.jsonl", base)
    before = base.read_bytes()
    result = run_script("diff_gen_caption.py", "--input", base, "--output", base)
    assert result.returncode == 2 and "output path is the input file" in result.stderr
    assert base.read_bytes() == before


def test_existing_output_survives_a_failed_run(tmp_path):
    base = tmp_path / "base.jsonl"
    base.write_bytes(b'{"orig_captions": ["a red dog"]}\nnot json\n')
    output = tmp_path / "out.jsonl"
    output.write_text("precious\n")
    assert run_script("diff_gen_caption.py", "--input", base, "--output", output).returncode == 2
    assert output.read_text() == "precious\n"


# --- no torch where none is needed ----------------------------------------------------
DATA_SCRIPTS = GENERATORS + ["make_compositional_perturb.py", "build_base_jsonl.py", "lgip_report.py"]


def test_data_preparation_scripts_do_not_import_torch():
    # One fresh interpreter: first lgip.perturb alone (neither torch nor numpy), then each
    # script's module level (all its imports) as a user's run executes it, without main().
    scripts = [str(REPO / script) for script in DATA_SCRIPTS]
    program = (
        "import sys, runpy\n"
        "import lgip.perturb\n"
        "loaded = sorted({'torch', 'numpy'} & set(sys.modules))\n"
        "assert not loaded, f'lgip.perturb imported {loaded}'\n"
        f"for script in {scripts!r}:\n"
        "    runpy.run_path(script, run_name='imported')\n"
        "    assert 'torch' not in sys.modules, f'{script} imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=str(REPO))
    assert result.returncode == 0, result.stderr
