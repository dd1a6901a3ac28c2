"""The pair plan: `Caption` (a record's caption and its tables, with FILE:LINE errors),
the one grammar of pair kinds (`split_kind`, `pairs_of`, `labels_of`, `pair_labels`),
and `build_plan` reading a JSONL into integer arrays."""
import os

import numpy as np
import pytest

from lgip.engine import Caption, PairPlan, build_plan, split_kind
from lgip.io import InputError
from tests.helpers import write_jsonl

PATH = "runs/data.jsonl"
LINE = 7
WHERE = f"{PATH}:{LINE}: "


def caption(record, index="0"):
    return Caption(record, index, record.get("orig_captions", ["a red dog"])[int(index)], PATH, LINE)


# --- Caption -----------------------------------------------------------------------------

def test_strings_of_a_caption():
    record = {"orig_captions": ["a dog", "a cat"], "same_caps": {"0": ["a photo of a dog"], "1": []},
              "combined_caps": {"0": [{"text": "a red dog", "combined_type": "para+color"}]}}
    assert caption(record).strings("same_caps") == ["a photo of a dog"]
    assert caption(record, "1").strings("same_caps") == []
    assert caption(record).strings("diff_caps") == []  # a table the record lacks
    assert caption({"orig_captions": ["a", "b"], "same_caps": {"0": ["x"]}}, "1").strings("same_caps") == []
    assert caption(record).strings("combined_caps", text_field="text") == ["a red dog"]
    assert caption(record).typed("combined_caps", "combined_type") == [("a red dog", "para+color")]
    assert caption(record).where() == f"{PATH}:{LINE}"


@pytest.mark.parametrize("table,call,message", [
    (["a cat"], lambda c: c.strings("same_caps"), "'same_caps' must be an object keyed by caption index, got list"),
    ({"0": "a cat"}, lambda c: c.strings("same_caps"), "'same_caps'['0'] must be a list, got str"),
    ({"0": ["a cat", 3]}, lambda c: c.strings("same_caps"), "'same_caps'['0'][1] must be a string"),
    ({"0": ["a cat"]}, lambda c: c.strings("same_caps", text_field="text"),
     "'same_caps'['0'][0] must be an object with a string 'text'"),
    ({"0": [{"text": "a cat"}]}, lambda c: c.typed("same_caps", "kind"),
     "'same_caps'['0'][0] must be an object with a string 'kind'"),
])
def test_bad_tables_name_the_file_and_line(table, call, message):
    with pytest.raises(InputError) as raised:
        call(caption({"orig_captions": ["a dog"], "same_caps": table}))
    assert str(raised.value) == WHERE + message


def test_flips_are_each_listed_once_with_their_type():
    record = {"orig_captions": ["a red dog"],
              "diff_caps": {"0": ["a blue dog", "a red cat", "two red dogs", "a red dog in a car"]},
              "diff_caps_object": {"0": ["a red cat", "a red bird"]},
              "diff_caps_color": {"0": ["a blue dog", "a red cat"]},
              "diff_caps_number": {"0": ["two red dogs"]}}
    assert caption(record).flip_types() == ["object", "color", "number"]  # the record's key order
    assert caption(record).flips() == [
        ("a blue dog", "color"), ("a red cat", "object"),  # the first typed key that lists it
        ("two red dogs", "number"), ("a red dog in a car", "all"),  # listed by no typed key
        ("a red bird", "object"),  # only a typed key lists it: after diff_caps
    ]
    assert caption({"orig_captions": ["a dog"]}).flips() == []


def test_paraphrase_kinds_fall_back_where_the_kinds_do_not_line_up():
    record = {"orig_captions": ["a dog"], "same_caps": {"0": ["a photo of a dog", "a hound"]},
              "same_caps_kind": {"0": ["template", "synonym"]}}
    assert caption(record).paraphrase_kinds(lambda text: "?") == [("a photo of a dog", "template"),
                                                                  ("a hound", "synonym")]
    record["same_caps_kind"]["0"] = ["template"]
    assert caption(record).paraphrase_kinds(lambda text: f"kind of {text}") == [
        ("a photo of a dog", "kind of a photo of a dog"), ("a hound", "kind of a hound")]
    del record["same_caps_kind"]
    assert caption(record).paraphrase_kinds(len) == [("a photo of a dog", 16), ("a hound", 7)]
    record["same_caps_kind"] = {"0": ["template", 5]}
    with pytest.raises(InputError, match=WHERE + r"'same_caps_kind'\['0'\]\[1\] must be a string"):
        caption(record).paraphrase_kinds(len)


# --- pair kinds ------------------------------------------------------------------------------

def test_split_kind():
    assert split_kind("same") == ("same", "")
    assert split_kind("flip:para+color") == ("flip", "para+color")
    assert split_kind("order:orig") == ("order", "orig")
    assert split_kind("type:a:b") == ("type", "a:b")  # the label is everything after the first colon


KINDS = ["same", "diff", "diff:color", "order:orig", "order:shuffle_trigrams", "same:template", "diff:color",
         "order:shuffle_trigrams", "swap:relation", "difference:x"]


@pytest.fixture
def kinds_plan():
    """One record, one caption, one pair of each kind in KINDS, in that order."""
    plan = PairPlan()
    plan.add_record(1, "a.jpg", ["a dog"], [[[(f"text {i}", kind) for i, kind in enumerate(KINDS)]]])
    return plan.finish()


def test_pairs_of_a_bare_role_match_all_its_labels(kinds_plan):
    def pairs(*wanted):
        return np.flatnonzero(kinds_plan.pairs_of(*wanted)).tolist()

    assert pairs("diff") == [1, 2, 6]  # not "difference:x": a role is matched whole
    assert pairs("diff:color") == [2, 6]
    assert pairs("order:orig") == [3]  # a labelled kind matches only itself
    assert pairs("order") == [3, 4, 7]
    assert pairs("same", "swap") == [0, 5, 8]
    assert pairs("flip") == [] and pairs("color") == []


def test_labels_of_a_role_and_of_pairs(kinds_plan):
    assert list(kinds_plan.labels_of("order")) == ["orig", "shuffle_trigrams"]  # first-seen order
    assert {kinds_plan.kinds[code] for code in kinds_plan.labels_of("order").values()} == {
        "order:orig", "order:shuffle_trigrams"}
    assert kinds_plan.labels_of("diff") == {"color": kinds_plan.kinds.index("diff:color")}  # bare `diff`: no label
    assert kinds_plan.labels_of("flip") == {}
    assert kinds_plan.pair_labels(kinds_plan.pairs_of("order")).tolist() == ["orig", "shuffle_trigrams",
                                                                             "shuffle_trigrams"]
    assert kinds_plan.pair_labels(np.array([0, 2, 9])).tolist() == ["", "color", "x"]
    empty = PairPlan().finish()
    assert empty.pair_labels(np.zeros(0, dtype=np.int64)).tolist() == []


# --- build_plan ----------------------------------------------------------------------------

def test_build_plan_reads_records_into_arrays(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"image_path": "images/a.jpg", "image_id": 11, "orig_captions": ["a dog", "a cat"],
         "same_caps": {"0": ["a photo of a dog"], "1": []}, "diff_caps": {"0": ["a cat"], "1": ["a dog"]}},
        {"image_path": "images/a.jpg", "orig_captions": ["a dog"], "same_caps": {"0": ["a dog"]}},
        {"image_path": "/abs/b.jpg", "image_id": "x", "orig_captions": []},
    ])
    path.write_text(path.read_text().replace("\n", "\n\n", 1))  # a blank line: records keep their line numbers
    seen = []

    def variant_groups(caption):
        seen.append((caption.path, caption.line, caption.index, caption.text))
        return [[(text, "same") for text in caption.strings("same_caps")],
                [(text, "diff:x") for text in caption.strings("diff_caps")]]

    plan = build_plan(str(path), variant_groups)
    assert seen == [(str(path), 1, "0", "a dog"), (str(path), 1, "1", "a cat"), (str(path), 3, "0", "a dog")]
    assert plan.images == [os.path.join(str(tmp_path), "images", "a.jpg"), "/abs/b.jpg"]  # relative to the JSONL
    assert plan.image_lines == [1, 4] and plan.record_image.tolist() == [0, 0, 1]
    assert plan.record_line.tolist() == [1, 3, 4] and plan.record_image_id == ["11", "", "x"]
    assert plan.texts == ["a dog", "a photo of a dog", "a cat"]  # each text once, in first-seen order
    assert plan.caption_record.tolist() == [0, 0, 1] and plan.caption_index.tolist() == [0, 1, 0]
    assert plan.caption_text.tolist() == [0, 2, 0]
    assert plan.pair_caption.tolist() == [0, 0, 1, 2] and plan.pair_text.tolist() == [1, 2, 0, 0]
    assert [plan.kinds[k] for k in plan.pair_kind] == ["same", "diff:x", "diff:x", "same"]
    # a record's captions share one padding group; each non-empty variant list is its own group
    assert plan.caption_group.tolist() == [0, 0, 4] and plan.pair_group.tolist() == [1, 2, 3, 5]
    assert plan.num_records == 3 and plan.num_groups == 7
    assert build_plan(str(path), variant_groups, limit=1).num_records == 1


@pytest.mark.parametrize("record,message", [
    ({"orig_captions": ["a dog"]}, ":2: record has no 'image_path' string"),
    ({"image_path": "", "orig_captions": ["a dog"]}, ":2: record has no 'image_path' string"),
    ({"image_path": "a.jpg"}, ":2: record has no 'orig_captions'"),
    ({"image_path": "a.jpg", "orig_captions": ["a dog", None]}, ":2: 'orig_captions'[1] must be a string"),
])
def test_build_plan_errors_name_the_line(tmp_path, record, message):
    path = write_jsonl(tmp_path / "in.jsonl", [{"image_path": "a.jpg", "orig_captions": ["a dog"]}, record])
    with pytest.raises(InputError) as raised:
        build_plan(str(path), lambda caption: [])
    assert str(raised.value).startswith(str(path) + message)
