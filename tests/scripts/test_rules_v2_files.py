"""The generators with `--rules v2` on the bundled sample, run as a user runs them:
deterministic, labelled, beside the paper's files, and sane on every flip and
paraphrase."""
import json

import pytest

from lgip.perturb.grammar import COLORS_V2, indefinite_article, split_words
from tests.helpers import DATA, GENERATORS, read_jsonl, run_script


@pytest.fixture(scope="module")
def v2_outputs(tmp_path_factory):
    """Each generator run with --rules v2 on the sample under two hash seeds: {script: (bytes, bytes, stdout)}."""
    folder = tmp_path_factory.mktemp("v2")
    outputs = {}
    for script in GENERATORS:
        runs = []
        for hash_seed in ["1", "2"]:
            output = folder / f"{script}.{hash_seed}.jsonl"
            result = run_script(script, "--input", DATA / "base_sample.jsonl", "--output", output, "--rules", "v2",
                                env_extra={"PYTHONHASHSEED": hash_seed}, check=True)
            runs.append(output)
        outputs[script] = (runs[0], runs[1], result.stdout)
    return outputs


@pytest.mark.parametrize("script", GENERATORS)
def test_v2_files_are_deterministic_and_labelled(v2_outputs, script):
    first, second, stdout = v2_outputs[script]
    assert first.read_bytes() == second.read_bytes()
    records = read_jsonl(first)
    assert len(records) == 240
    assert all(list(record)[-1] == "rules" and record["rules"] == "v2" for record in records)
    assert "rules:                 v2" in stdout


def test_v2_rebuttal_keeps_the_release_kinds_and_types(v2_outputs):
    for record in read_jsonl(v2_outputs["rebuttal_enhanced_perturb_with_fliptypes.py"][0]):
        for key, paraphrases in record["same_caps"].items():
            assert len(record["same_caps_kind"][key]) == len(paraphrases) <= 6
            assert set(record["same_caps_kind"][key]) <= {"template", "prefix", "passive", "synonym"}
            assert {item["combined_type"] for item in record["combined_caps"][key]} <= {
                "para+color", "para+number", "para+object"}


def test_v2_default_output_sits_beside_the_papers(tmp_path):
    base = tmp_path / "base.jsonl"
    base.write_text(json.dumps({"orig_captions": ["A red car", "Two dogs on a bed"]}) + "\n")
    run_script("make_perturb_with_fliptypes.py", "--input", base, check=True)
    run_script("make_perturb_with_fliptypes.py", "--input", base, "--rules", "v2", check=True)
    paper = read_jsonl(tmp_path / "base_with_fliptypes.jsonl")
    v2 = read_jsonl(tmp_path / "base_with_fliptypes_v2.jsonl")
    assert "rules" not in paper[0] and v2[0]["rules"] == "v2"
    assert paper[0]["diff_caps_number"]["1"] == [] and len(v2[0]["diff_caps_number"]["1"]) == 1  # "Two" counts in v2


def test_paper_records_have_no_rules_key(tmp_path):
    output = tmp_path / "out.jsonl"
    run_script("rebuttal_enhanced_perturb_with_fliptypes.py", "--input", DATA / "base_sample.jsonl", "--output", output,
               "--limit", 5, check=True)
    assert all("rules" not in record for record in read_jsonl(output))


def test_unknown_rules_are_refused(tmp_path):
    result = run_script("diff_gen_caption.py", "--input", DATA / "base_sample.jsonl", "--output", tmp_path / "o.jsonl",
                        "--rules", "v3")
    assert result.returncode == 2 and "invalid choice: 'v3'" in result.stderr


def articles_agree(text, caption):
    """Every a/an in `text` fits the word after it, or stands before the same word in the caption."""
    words = split_words(text)
    original = [(a.lower, b.lower) for a, b in zip(split_words(caption), split_words(caption)[1:])]
    return all(indefinite_article(after.text) == word.lower or (word.lower, after.lower) in original
               for word, after in zip(words, words[1:]) if word.lower in ("a", "an"))


def changed_words(caption, flip):
    """(before, after) for each word position that differs, when both have as many words."""
    before, after = split_words(caption), split_words(flip)
    if len(before) != len(after):
        return None
    return [(b.lower, a.lower) for b, a in zip(before, after) if b.text != a.text]


@pytest.mark.parametrize("script", ["make_perturb_with_fliptypes.py", "rebuttal_enhanced_perturb_with_fliptypes.py"])
def test_every_v2_flip_and_paraphrase_is_sane(v2_outputs, script):
    colour_words = {w: w for w in COLORS_V2} | {"grey": "gray"}
    for record in read_jsonl(v2_outputs[script][0]):
        for key, caption in enumerate(record["orig_captions"]):
            key = str(key)
            typed = sum((record[f"diff_caps_{t}"][key] for t in ["color", "number", "object"]), [])
            assert sorted(typed) == sorted(record["diff_caps"][key])
            for flip in record["diff_caps_color"][key]:
                changes = [(b, a) for b, a in changed_words(caption, flip) if b not in ("a", "an")]
                assert len(changes) == 1, (caption, flip)
                old, new = changes[0]
                mentioned = {colour_words[w.lower] for w in split_words(caption) if w.lower in colour_words}
                assert old in colour_words and new in colour_words and colour_words[new] not in mentioned
            for flip in record["diff_caps"][key]:
                assert articles_agree(flip, caption), (caption, flip)
            for paraphrase in record["same_caps"][key]:
                assert articles_agree(paraphrase, caption), (caption, paraphrase)
                assert ". " not in paraphrase and not paraphrase.endswith(". in the scene")
