"""The HTML report's library, in-process: the streaming choice of examples against a
brute-force choice over the same synthetic dumps, escaping, a missing image, a dump
without a metric file, and the errors a bad dump gives."""
import csv
import gzip
import html.parser
import math
import random
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from lgip.io import InputError
from lgip.report import dumps
from lgip.report.dumps import read_dump
from lgip.report.examples import select_examples
from lgip.report.html import ReportContext, ReportTools, build_page, marked_difference, write_html_report
from tests.helpers import REPO, run_script

KINDS = ["same", "same:synonym", "diff", "type:color", "flip:number", "diff:object", "order:shuffle"]
MODELS = ["m<1>", "m&2", "m3"]


def dump_row(model, line, caption_index, kind, gap, image="/nowhere/img.jpg", variant=None, caption=None):
    caption = caption or f"caption {line}.{caption_index}"
    variant = variant or f"{caption} {kind}"
    base = 0.25
    return [model, line, f"id{line}", image, caption_index, caption, kind, variant, base,
            base - gap if isinstance(gap, float) else "", gap]


def write_dump(path, rows):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(dumps.DUMP_COLUMNS)
        writer.writerows(rows)
    return str(path)


def synthetic_dumps(folder):
    """Two dumps (gzip CSV, plain CSV) of three models with tied gaps (two decimals), a NaN,
    a kind the report skips, one model split across both files, and rows of one model
    repeated in the second file with other gaps (the same pair in two dumps)."""
    rng = random.Random(7)
    pair_gap = {}
    blocks = {model: [] for model in MODELS}
    for model in MODELS:
        for line in range(1, 9):
            for caption_index in range(2):
                for kind in KINDS:
                    shared = pair_gap.setdefault((line, caption_index, kind), rng.uniform(-0.2, 0.2))
                    gap = round(shared + rng.uniform(-0.08, 0.08), 2)
                    blocks[model].append(dump_row(model, line, caption_index, kind, "nan" if rng.random() < 0.02 else gap))
    half = len(blocks["m3"]) // 2
    repeats = [row[:10] + [round(row[10] - 0.05, 2) if row[10] != "nan" else "nan"] for row in blocks["m<1>"][::5]]
    first = write_dump(folder / "a.csv.gz", blocks["m<1>"] + blocks["m&2"] + blocks["m3"][:half])
    second = write_dump(folder / "b.csv", blocks["m3"][half:] + repeats)
    return [first, second]


def brute_force(paths, k):
    """The same choice made the slow way: every row in memory, sorted."""
    rows = []
    for file_index, path in enumerate(paths):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            for row_number, row in enumerate(csv.DictReader(handle), start=1):
                if math.isfinite(float(row["gap"])):
                    rows.append((file_index, row_number, path, row, float(row["gap"])))
    groups = defaultdict(list)
    first_seen, model_gaps, flip_models = {}, defaultdict(dict), []
    for file_index, row_number, path, row, gap in rows:
        prefix, _, rest = row["variant_kind"].partition(":")
        key = (row["line"], row["image_path"], row["caption_index"], row["variant_text"])
        if prefix == "same":
            groups[(row["model_tag"], "paraphrase", "")].append(((-abs(gap), file_index, row_number), key, (path, row_number)))
        elif prefix in ("diff", "type", "flip"):
            if gap < 0:
                groups[(row["model_tag"], "flip", rest or "all")].append(((gap, file_index, row_number), key,
                                                                           (path, row_number)))
            first_seen.setdefault(key, (len(first_seen), path, row_number))
            model_gaps[key][row["model_tag"]] = float(np.float32(gap))  # the last row of a pair counts
            if row["model_tag"] not in flip_models:
                flip_models.append(row["model_tag"])
    chosen = {}
    for group, members in groups.items():
        kept, seen = [], set()
        for _rank, key, where in sorted(members):
            if key not in seen:
                seen.add(key)
                kept.append(where)
        chosen[group] = kept[:k]
    complete = {key: gaps for key, gaps in model_gaps.items() if len(gaps) == len(flip_models)}
    mean = {key: np.mean(np.array([gaps[m] for m in flip_models], dtype=np.float32), dtype=np.float64)
            for key, gaps in complete.items()}
    wrong = sorted((key for key, gaps in complete.items() if all(g < 0 for g in gaps.values())),
                   key=lambda key: (mean[key], first_seen[key][0]))
    right = sorted((key for key, gaps in complete.items() if all(g >= 0 for g in gaps.values())),
                   key=lambda key: (-mean[key], first_seen[key][0]))
    shared = {name: [(first_seen[key][1:], complete[key]) for key in keys[:k]]
              for name, keys in (("all_wrong", wrong), ("none_wrong", right))}
    return chosen, shared, len(complete)


@pytest.mark.parametrize("k,chunk_rows,workers", [(3, 5, 1), (4, 1000, 1), (3, 0, 2)])
def test_streaming_choice_equals_brute_force(tmp_path, monkeypatch, k, chunk_rows, workers):
    paths = synthetic_dumps(tmp_path)
    if workers > 1:  # worker processes, on blocks of a few rows each (cut between whole records)
        monkeypatch.setattr(dumps, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(dumps, "BLOCK_BYTES", 1500)
    selection = select_examples(paths, k, workers=workers, chunk_rows=chunk_rows or dumps.CHUNK_ROWS)
    chosen, shared, complete = brute_force(paths, k)
    streamed = {}
    for model, by_type in selection.flips.items():
        for flip_type, examples in by_type.items():
            streamed[(model, "flip", flip_type)] = [(e.dump, e.row) for e in examples]
    for model, examples in selection.paraphrases.items():
        streamed[(model, "paraphrase", "")] = [(e.dump, e.row) for e in examples]
    assert {group: rows for group, rows in streamed.items() if rows} == chosen
    assert set(selection.flips["m<1>"]) == {"all", "color", "number", "object"}  # order:* skipped
    assert selection.flip_models == MODELS and selection.shared_flips == complete
    for name in ("all_wrong", "none_wrong"):
        got = [((flip.example.dump, flip.example.row), flip.gaps) for flip in getattr(selection, name)]
        assert got == shared[name] and got, name
    assert all(flip.mean_gap < 0 for flip in selection.all_wrong)
    assert selection.rows_read == sum(1 for path in paths for _ in csv.reader(
        (gzip.open if path.endswith(".gz") else open)(path, "rt", newline=""))) - 2


@pytest.mark.parametrize("name", ["quoted.csv", "quoted.csv.gz"])
def test_worker_blocks_end_between_records_even_inside_quoted_newlines(tmp_path, monkeypatch, name):
    captions = ['He said "stop"\nthen left,\n"quietly".', "Plain caption.", 'A "quoted" one, with a comma.']
    rows = [dump_row(f"m{m}", line, 0, "diff", round(-0.01 * (line % 7) - 0.001 * m, 4),
                     caption=captions[line % 3], variant=captions[line % 3].replace("caption", "flip") + " x")
            for m in range(2) for line in range(1, 400)]
    path = write_dump(tmp_path / name, rows)
    serial = select_examples([path], 5, workers=1)
    monkeypatch.setattr(dumps, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(dumps, "BLOCK_BYTES", 97)  # reads of 97 bytes: many cuts, some at a quoted newline
    parallel = select_examples([path], 5, workers=2)
    assert parallel.rows_read == serial.rows_read == len(rows)
    for name in ("flips", "all_wrong"):
        assert repr(getattr(parallel, name)) == repr(getattr(serial, name))
    assert parallel.flips["m0"]["all"][0].caption == captions[(parallel.flips["m0"]["all"][0].row) % 3]


def test_the_page_escapes_every_text(tmp_path):
    hostile = '<script>alert("x")</script> a red car'
    rows = [dump_row("tag<b>", 1, 0, "diff", -0.3, image='/no/"quoted"<img>.jpg', caption=hostile,
                     variant='<script>alert("x")</script> a blue car'),
            dump_row("other", 1, 0, "diff", -0.2, image='/no/"quoted"<img>.jpg', caption=hostile,
                     variant='<script>alert("x")</script> a blue car')]
    page_path = tmp_path / "page.html"
    write_html_report(str(page_path), [], ReportTools(None, None, []), [write_dump(tmp_path / "d.csv", rows)], 3)
    page = page_path.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "tag&lt;b&gt;" in page and "&quot;quoted&quot;&lt;img&gt;.jpg" in page

    class Tags(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags = defaultdict(int)

        def handle_starttag(self, tag, attrs):
            self.tags[tag] += 1

    parser = Tags()
    parser.feed(page)
    assert parser.tags["script"] == 1 and parser.tags["b"] == 2  # the page's own script; two gaps in bold
    assert 'http-equiv="Content-Security-Policy"' in page and "http://" not in page and "https://" not in page


def test_missing_image_shows_its_path_and_a_present_one_a_thumbnail(tmp_path):
    present = tmp_path / "present.jpg"
    Image.new("RGB", (640, 480), (200, 30, 30)).save(present)
    rows = [dump_row("m", 1, 0, "diff", -0.3, image=str(present)),
            dump_row("m", 2, 0, "diff", -0.2, image=str(tmp_path / "gone.jpg")),
            dump_row("m", 3, 0, "diff", -0.1, image="relative/also_gone.jpg")]
    selection = select_examples([write_dump(tmp_path / "d.csv.gz", rows)], 5)
    page = build_page([], ReportContext(tools=ReportTools(None, None, []), selection=selection))
    assert page.count('class="thumb" src="data:image/jpeg;base64,') == 1
    assert page.count('class="noimage"') == 2
    assert str(tmp_path / "gone.jpg") in page and str(tmp_path / "relative" / "also_gone.jpg") in page


def test_a_dump_without_a_metric_file_gives_a_page(tmp_path):
    rows = [dump_row(model, line, 0, kind, gap, caption="A red car.", variant="A blue car.")
            for model, gap in (("solo", -0.1), ("duo", 0.2)) for line in (1, 2) for kind in ("type:color", "same")]
    dump = write_dump(tmp_path / "pairs.csv", rows)
    result = run_script("lgip_report.py", "--html", tmp_path / "page.html", "--pairs", dump, "--examples", "2")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert 'id="examples"' in page and 'id="leaderboard"' not in page
    assert "color flips that beat their caption: 2 shown of 2 (of 2 scored)" in page
    assert "A <mark>blue</mark> car." in page
    assert run_script("lgip_report.py", "--pairs", dump).returncode == 2  # --pairs alone: a usage error


def test_marked_difference_marks_only_the_changed_words():
    caption, variant = marked_difference("Two red cars <near> a tree.", "Three red cars <near> a bush!")
    assert caption == '<mark class="out">Two</mark> red cars &lt;near&gt; a <mark class="out">tree.</mark>'
    assert variant == "<mark>Three</mark> red cars &lt;near&gt; a <mark>bush!</mark>"
    assert marked_difference("A dog.", "a dog") == ("A dog.", "a dog")  # case and punctuation aside


def test_the_report_imports_no_torch():
    code = "import sys, lgip.report.html, lgip.report.examples, lgip_report; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


def test_bad_dumps_name_the_file_and_line(tmp_path, monkeypatch):
    no_gap = tmp_path / "no_gap.csv"
    no_gap.write_text("model_tag,line\nm,1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"no_gap.csv:1: no column .*'gap'"):
        select_examples([str(no_gap)])
    rows = [dump_row("m", 1, 0, "diff", -0.1), dump_row("m", 2, 0, "diff", "lots")]
    with pytest.raises(InputError, match=r"bad.csv:3: gap 'lots' is not a number"):
        select_examples([write_dump(tmp_path / "bad.csv", rows)])
    whole = write_dump(tmp_path / "whole.csv.gz", [dump_row("m", line, 0, "diff", -0.1) for line in range(5000)])
    truncated = tmp_path / "cut.csv.gz"
    with open(whole, "rb") as handle:
        truncated.write_bytes(handle.read()[:4000])
    with pytest.raises(InputError, match="cut.csv.gz: not a readable --dump-pairs CSV"):
        select_examples([str(truncated)])
    with pytest.raises(InputError, match="gone.csv: no such --pairs file"):
        select_examples([str(tmp_path / "gone.csv")])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    (tmp_path / "pairs.parquet").write_bytes(b"PAR1")
    with pytest.raises(InputError, match=r"pairs.parquet: reading Parquet needs pyarrow"):
        list(read_dump(str(tmp_path / "pairs.parquet")))
