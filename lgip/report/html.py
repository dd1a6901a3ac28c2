"""One self-contained HTML page for a run: `lgip_report.py RESULTS... --html PAGE`.

The page holds the leaderboard (sortable by clicking a column), the report's two plots
as embedded PNGs, the compositional table, the examples chosen from pair dumps (with
thumbnails embedded as JPEG, the changed words marked, both scores), the flips every
model gets wrong and those none does, and the run facts from the metric files' config.
It loads nothing from anywhere (a Content-Security-Policy forbids it) and escapes every
text it shows. Standard library only, plus Pillow for the thumbnails; the tables and
plots come from lgip_report.py through `ReportTools`, so the page and the Markdown and
PNG outputs cannot drift apart.

A section is a function `section(rows, context) -> Section | None` (None: nothing to
show); `SECTIONS` lists them in page order. A new probe's results get a page section by
adding one function to the list.
"""
from __future__ import annotations

import base64
import datetime
import difflib
import html
import io
import json
import os
import string
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from lgip.io import InputError, atomic_output, file_sha256
from lgip.report.examples import DEFAULT_EXAMPLES, UNTYPED_FLIP, Example, ExampleSelection, select_examples

THUMBNAIL_PX = 160  # the longer side of an example's image
THUMBNAIL_QUALITY = 80  # JPEG quality of the thumbnails: ~5-8 KB each for a photo
FLIP_TYPE_ORDER = ["color", "number", "object"]  # first, in this order; others after, sorted
MISSING = "–"

Table = Tuple[List[str], List[List[str]]]


@dataclass
class ReportTools:
    """What lgip_report.py lends the page: its table builders and plot functions."""
    table: Callable[[list], Table]  # LGIP rows -> (header, body)
    compositional_table: Callable[[list], Table]
    plots: Sequence[Tuple[str, Callable[[list, str], Any]]]  # (title, draw(LGIP rows, png path))
    probes: Sequence["ProbeTools"] = ()  # the labelled-image probes' tables and plots


@dataclass
class ProbeTools:
    """How one probe's rows (row["kind"] == kind) appear on the page: a table and,
    optionally, a plot, under a title and a one-line note."""
    kind: str
    title: str
    note: str
    table: Callable[[list], Table]
    plot: Optional[Callable[[list, str], Any]] = None


@dataclass
class ReportContext:
    """What every section may use besides the rows."""
    tools: ReportTools
    selection: Optional[ExampleSelection] = None
    pair_files: Sequence[str] = ()
    thumbnails: Dict[str, Optional[str]] = field(default_factory=dict)  # image file -> data URI (None: unreadable)


@dataclass
class Section:
    anchor: str
    title: str
    body: str  # HTML, every text already escaped


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def lgip_rows(rows: list) -> list:
    return [row for row in rows if row.get("kind") is None]


# ---------------------------------------------------------------------------
# Pieces: tables, images, marked differences
# ---------------------------------------------------------------------------

def _number(cell: str) -> Optional[float]:
    """The number a table cell starts with ("0.0774 [0.07, 0.08]" -> 0.0774); None for
    text and for the missing mark."""
    try:
        return float(cell.split(" ", 1)[0].replace("−", "-"))
    except ValueError:
        return None


def _cell(text: str) -> str:
    value, bracket, interval = text.partition(" [")
    if bracket and _number(value) is not None:  # the interval in a quieter type
        return f'{esc(value)} <span class="ci">[{esc(interval)}</span>'
    return esc(text)


def sortable_table(header: Sequence[str], body: Sequence[Sequence[str]], table_id: str = "",
                   raw_html_columns: Sequence[int] = ()) -> str:
    """A table whose header cells sort the rows when clicked. A column whose cells are all
    numbers (or the missing mark) sorts numerically, missing values last. Cells are text
    (escaped here) except in `raw_html_columns`, whose cells are (html, sort text)."""
    numeric = []
    for column in range(len(header)):
        if column in raw_html_columns:
            numeric.append(False)
            continue
        cells = [row[column] for row in body if row[column] != MISSING]
        numeric.append(all(_number(cell) is not None for cell in cells))  # all missing: still a number column
    head = "".join(f'<th scope="col" data-type="{"number" if is_number else "text"}">{esc(label)}</th>'
                   for label, is_number in zip(header, numeric))
    lines = []
    for row in body:
        cells = []
        for column, (cell, is_number) in enumerate(zip(row, numeric)):
            if column in raw_html_columns:
                shown, sort_text = cell
                cells.append(f'<td data-sort="{esc(sort_text)}">{shown}</td>')
            elif is_number:
                value = _number(cell)
                cells.append(f'<td class="num" data-sort="{"" if value is None else repr(value)}">{_cell(cell)}</td>')
            else:
                cells.append(f'<td data-sort="{esc(cell)}">{_cell(cell)}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    identity = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table class="sortable"{identity}><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(lines)}</tbody></table></div>')


def plain_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A table of escaped text."""
    head = "".join(f'<th scope="col">{esc(label)}</th>' for label in header)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(str(cell))}</td>" for cell in row) + "</tr>" for row in body)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def png_data_uri(draw: Callable[[list, str], Any], rows: list) -> str:
    """Run a plot function of lgip_report.py into a temporary PNG and return it as a data URI."""
    with tempfile.TemporaryDirectory(prefix="lgip_report_") as folder:
        path = os.path.join(folder, "plot.png")
        draw(rows, path)
        with open(path, "rb") as handle:
            return "data:image/png;base64," + base64.b64encode(handle.read()).decode("ascii")


def thumbnail_data_uri(path: str) -> Optional[str]:
    """The image at `path` scaled to THUMBNAIL_PX on its longer side, as a JPEG data URI;
    None when it is missing or unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.draft("RGB", (2 * THUMBNAIL_PX, 2 * THUMBNAIL_PX))  # JPEGs decode at a fraction of their size
            image = ImageOps.exif_transpose(image).convert("RGB")
            scale = THUMBNAIL_PX / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_file(example: Example) -> str:
    """The example's image on disk: a relative path is relative to its dump's folder."""
    if os.path.isabs(example.image_path):
        return example.image_path
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(example.dump)), example.image_path))


def thumbnail_html(example: Example, context: ReportContext) -> str:
    """An <img> of the example's image, or its path as text when it cannot be read."""
    path = image_file(example)
    if path not in context.thumbnails:
        context.thumbnails[path] = thumbnail_data_uri(path)
    uri = context.thumbnails[path]
    if uri is None:
        return f'<div class="noimage">image not readable<br><code>{esc(path)}</code></div>'
    return f'<img class="thumb" src="{uri}" alt="{esc(os.path.basename(path))}" title="{esc(path)}">'


def _comparable(word: str) -> str:
    return word.strip(string.punctuation).lower()


def marked_difference(caption: str, variant: str) -> Tuple[str, str]:
    """(caption, variant) as HTML with the words that differ (a word-level diff, case and
    punctuation aside) wrapped in <mark>; every word escaped."""
    left_words, right_words = caption.split(), variant.split()
    matcher = difflib.SequenceMatcher(a=[_comparable(w) for w in left_words], b=[_comparable(w) for w in right_words],
                                      autojunk=False)
    left, right = [], []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        left_text, right_text = esc(" ".join(left_words[i1:i2])), esc(" ".join(right_words[j1:j2]))
        if tag == "equal":
            left.append(left_text)
            right.append(right_text)
            continue
        if left_text:
            left.append(f'<mark class="out">{left_text}</mark>')
        if right_text:
            right.append(f"<mark>{right_text}</mark>")
    return " ".join(left), " ".join(right)


def score(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:.4f}".replace("-", "−")


def example_card(example: Example, variant_label: str, context: ReportContext) -> str:
    """One pair: thumbnail, caption and variant with the changed words marked, both scores."""
    caption_html, variant_html = marked_difference(example.caption, example.variant_text)
    # A flip's gap has a good sign (positive); a paraphrase's is bad either way.
    gap_class = "moved" if variant_label == "paraphrase" else ("neg" if example.gap < 0 else "pos")
    place = f"line {example.line} · caption {example.caption_index}" + (
        f" · image {example.image_id}" if example.image_id else "")
    return (f'<figure class="card">{thumbnail_html(example, context)}<figcaption>'
            f'<p><span class="tag">caption</span> {caption_html}</p>'
            f'<p><span class="tag">{esc(variant_label)}</span> {variant_html}</p>'
            f'<p class="scores">caption {score(example.base_score)} · {esc(variant_label.split(" ")[0])} '
            f'{score(example.variant_score)} · gap <b class="{gap_class}">{score(example.gap)}</b></p>'
            f'<p class="where">{esc(place)} · {esc(example.variant_kind)}</p></figcaption></figure>')


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------

def leaderboard_section(rows: list, context: ReportContext) -> Optional[Section]:
    """One row per (model, input): the headline metrics with their 95% intervals."""
    rows = lgip_rows(rows)
    if not rows:
        return None
    header, body = context.tools.table(rows)
    return Section("leaderboard", "Leaderboard",
                   '<p class="note">One row per model and input file. ↓ lower is better, ↑ higher is better; '
                   'brackets: 95% bootstrap interval. Click a column header to sort by it (again to reverse).</p>'
                   + sortable_table(header, body, "leaderboard"))


def plots_section(rows: list, context: ReportContext) -> Optional[Section]:
    """The report's plots, each drawn by lgip_report.py's own function; a plot the rows
    cannot give (e.g. no per-type rates) is named with the reason."""
    rows = lgip_rows(rows)
    if not rows:
        return None
    parts = []
    for title, draw in context.tools.plots:
        try:
            uri = png_data_uri(draw, rows)
        except InputError as err:
            parts.append(f'<p class="note">{esc(title)}: not drawn ({esc(err)}).</p>')
            continue
        parts.append(f'<figure class="plot"><img src="{uri}" alt="{esc(title)}"><figcaption>{esc(title)}'
                     f'</figcaption></figure>')
    return Section("plots", "Plots", f'<div class="plots">{"".join(parts)}</div>')


def compositional_section(rows: list, context: ReportContext) -> Optional[Section]:
    """run_compositional.py's table, where its files are among the inputs."""
    rows = [row for row in rows if row.get("kind") == "compositional"]
    if not rows:
        return None
    header, body = context.tools.compositional_table(rows)
    return Section("compositional", "Compositional probes",
                   '<p class="note">Word-order precision, swap accuracy, hard-positive triples; blind: the image '
                   'replaced by the mean image embedding.</p>' + sortable_table(header, body, "compositional"))


def probe_sections(rows: list, context: ReportContext) -> List[Section]:
    """One section per probe whose files are among the inputs: its table and its plot."""
    sections = []
    for probe in context.tools.probes:
        mine = [row for row in rows if row.get("kind") == probe.kind]
        if not mine:
            continue
        header, body = probe.table(mine)
        parts = [f'<p class="note">{esc(probe.note)}</p>', sortable_table(header, body, probe.kind)]
        if probe.plot is not None:
            parts.append(f'<figure class="plot"><img src="{png_data_uri(probe.plot, mine)}" alt="{esc(probe.title)}">'
                         f'<figcaption>{esc(probe.title)}</figcaption></figure>')
        sections.append(Section(probe.kind, probe.title, "".join(parts)))
    return sections


def _flip_types(found: Dict[str, Any]) -> List[str]:
    return [t for t in FLIP_TYPE_ORDER if t in found] + sorted(t for t in found if t not in FLIP_TYPE_ORDER)


def examples_section(rows: list, context: ReportContext) -> Optional[Section]:
    """Per model: per flip type the flips that beat their caption by the most, then the
    paraphrases that move the score most."""
    selection = context.selection
    if selection is None:
        return Section("examples", "Examples",
                       '<p class="note">No pair dumps given. Run an evaluation script with <code>--dump-pairs '
                       'pairs.csv.gz</code> and pass the file here with <code>--pairs pairs.csv.gz</code> to see the '
                       'images and captions behind the numbers.</p>')
    ordered = [row["model_tag"] for row in rows if row["model_tag"] in selection.models]
    models = list(dict.fromkeys(ordered + selection.models))
    links = " · ".join(f'<a href="#examples-{index}">{esc(model)}</a>' for index, model in enumerate(models))
    parts = [f'<p class="note">Gap = caption score − variant score. A flip with a negative gap beat the true '
             f'caption: the model preferred the wrong text. Up to {selection.k} per group, worst first; '
             f'{selection.rows_read:,} pairs read from {len(selection.files)} dump file(s).</p><p>{links}</p>']
    for index, model in enumerate(models):
        groups = []
        flips = selection.flips.get(model, {})
        for flip_type in _flip_types(flips):
            counts = selection.counts[(model, "flip", flip_type)]
            name = "untyped (diff_caps)" if flip_type == UNTYPED_FLIP else flip_type
            heading = (f"{name} flips that beat their caption: {len(flips[flip_type])} shown of "
                       f"{counts.flip_wins:,} (of {counts.scored:,} scored)")
            label = "flip" if flip_type == UNTYPED_FLIP else f"flip ({flip_type})"
            cards = "".join(example_card(example, label, context) for example in flips[flip_type])
            groups.append(f'<h4>{esc(heading)}</h4><div class="cards">{cards or "<p>none</p>"}</div>')
        paraphrases = selection.paraphrases.get(model)
        if paraphrases is not None:
            counts = selection.counts[(model, "paraphrase", "")]
            heading = f"paraphrases that move the score most: {len(paraphrases)} shown of {counts.scored:,}"
            cards = "".join(example_card(example, "paraphrase", context) for example in paraphrases)
            groups.append(f'<h4>{esc(heading)}</h4><div class="cards">{cards or "<p>none</p>"}</div>')
        parts.append(f'<details open class="model" id="examples-{index}"><summary>{esc(model)}</summary>'
                     f'{"".join(groups) or "<p>no flips or paraphrases in the dumps</p>"}</details>')
    return Section("examples", "Examples", "".join(parts))


def shared_flips_section(rows: list, context: ReportContext) -> Optional[Section]:
    """The flips every model gets wrong and those no model gets wrong, with each model's gap."""
    selection = context.selection
    if selection is None:
        return None
    if len(selection.flip_models) < 2:
        return Section("shared", "Flips across models",
                       '<p class="note">Needs the flips of two or more models in the dumps.</p>')
    models = selection.flip_models
    parts = [f'<p class="note">{selection.shared_flips:,} distinct flips (same input line, caption and flip '
             f'text) were scored by all {len(models)} models; every model scored the flip above the caption '
             f'for {selection.all_wrong_count:,} of them, no model did for {selection.none_wrong_count:,}. '
             f'Cells: each model\'s gap (caption − flip).</p>']
    for title, flips in [("Every model gets these wrong (most negative mean gap first)", selection.all_wrong),
                         ("No model gets these wrong (largest mean gap first)", selection.none_wrong)]:
        header = ["image", "caption", "flip", "mean gap"] + models
        body = []
        for shared in flips:
            example = shared.example
            caption_html, variant_html = marked_difference(example.caption, example.variant_text)
            body.append([(thumbnail_html(example, context), example.image_path), (caption_html, example.caption),
                         (variant_html, example.variant_text), score(shared.mean_gap)]
                        + [score(shared.gaps[model]) for model in models])
        table = sortable_table(header, body, raw_html_columns=(0, 1, 2)) if body else "<p>none</p>"
        parts.append(f"<h3>{esc(title)}</h3>{table}")
    return Section("shared", "Flips across models", "".join(parts))


def _configs(rows: list) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """(source file, model tag) -> the entry's `config` block, each file read once."""
    found: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for source in dict.fromkeys(row["source"] for row in rows):
        try:
            with open(source, encoding="utf-8") as handle:
                payload = json.load(handle)
        except (OSError, ValueError):
            continue
        for entry in payload if isinstance(payload, list) else [payload]:
            if isinstance(entry, dict) and "model_tag" in entry:
                found.setdefault((source, entry["model_tag"]), entry.get("config") or {})
    return found


def _when(path: str) -> str:
    try:
        stamp = os.path.getmtime(path)
    except OSError:
        return MISSING
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


def run_facts_section(rows: list, context: ReportContext) -> Optional[Section]:
    """Models, specs, inputs with checksums, settings, timings and library versions from
    the metric files' config blocks; the dumps with their size and checksum."""
    parts = []
    configs = _configs(rows)
    versions: Dict[str, Dict[str, int]] = {}
    body = []
    for row in rows:
        config = configs.get((row["source"], row["model_tag"]), {})
        timings = config.get("timings_seconds") or {}
        seconds = f"{sum(timings.values()):.1f}" if timings else MISSING
        largest = sorted(((value, name) for name, value in timings.items() if value >= 0.05), reverse=True)[:3]
        breakdown = ", ".join(f"{name} {value:.1f}" for value, name in largest)
        body.append([row["model_tag"], config.get("spec") or row.get("spec") or MISSING, row["script"] or MISSING,
                     config.get("input") or row["input"], (config.get("input_sha256") or MISSING)[:16],
                     f'{config.get("precision", MISSING)} on {config.get("device", MISSING)}',
                     f'{config.get("bootstrap_resamples", MISSING)} / {config.get("seed", MISSING)}',
                     seconds + (f" ({breakdown})" if breakdown else ""), _when(row["source"]), row["source"]])
        for package, version in (config.get("versions") or {}).items():
            counts = versions.setdefault(package, {})
            counts[str(version)] = counts.get(str(version), 0) + 1
    if body:
        parts.append("<h3>Metric files</h3>" + plain_table(
            ["model", "spec", "script", "input", "input sha256 (first 16)", "precision", "bootstrap / seed",
             "seconds (largest parts)", "written", "metric file"], body))
    if versions:
        shown = [[package, ", ".join(version if len(counts) == 1 else f"{version} ({count} files)"
                                     for version, count in counts.items())] for package, counts in versions.items()]
        parts.append("<h3>Library versions</h3>" + plain_table(["package", "version"], shown))
    if context.pair_files:
        dumps = []
        for path in context.pair_files:
            dumps.append([os.path.abspath(path), f"{os.path.getsize(path) / 1e6:,.1f} MB", file_sha256(path)[:16],
                          _when(path)])
        parts.append("<h3>Pair dumps</h3>" + plain_table(["file", "size", "sha256 (first 16)", "written"], dumps))
    return Section("facts", "Run facts", "".join(parts)) if parts else None


SECTIONS: List[Callable[[list, ReportContext], Optional[Section]]] = [
    leaderboard_section, plots_section, compositional_section, examples_section, shared_flips_section,
    run_facts_section,
]


# ---------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{background:#23395d;color:#fff;padding:14px 24px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85}nav a{color:#cfe0ff;margin-right:14px}main{padding:8px 24px 40px}
h2{border-bottom:2px solid #23395d;padding-bottom:2px;margin-top:28px}h4{margin:18px 0 6px}
.note{color:#555;max-width:980px}.scroll{overflow-x:auto}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px}
th,td{border:1px solid #d8d8d8;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f8;position:sticky;top:0}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{background:#dde6f3}
th[aria-sort=ascending]::after{content:" ▲";color:#23395d}th[aria-sort=descending]::after{content:" ▼";color:#23395d}
.ci{display:block;color:#777;font-size:12px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:16px;align-items:start}
figure.plot{margin:8px 0}figure.plot img{max-width:100%;border:1px solid #ddd;background:#fff}
details.model{background:#fff;border:1px solid #ddd;border-radius:6px;padding:4px 12px;margin:10px 0}
details.model summary{font-weight:600;font-size:16px;cursor:pointer;padding:4px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:10px}
figure.card{display:flex;gap:10px;margin:0;padding:8px;border:1px solid #e2e2e2;border-radius:6px;background:#fcfcfc}
img.thumb{width:160px;height:auto;max-height:160px;object-fit:contain;flex:none;align-self:flex-start;border-radius:3px}
td img.thumb{width:96px}
.noimage{width:160px;min-height:90px;flex:none;background:#f1e6e6;color:#733;font-size:11px;padding:6px;
box-sizing:border-box;overflow-wrap:anywhere}
figure.card p{margin:0 0 4px}.tag{display:inline-block;min-width:64px;color:#666;font-size:12px}
mark{background:#ffe58a;padding:0 2px;border-radius:2px}mark.out{background:#f3d1d1}
.scores{font-variant-numeric:tabular-nums}.neg{color:#b3261e}.pos{color:#1e7b34}.moved{color:#8a4b00}.where{color:#888;font-size:12px}
code{font-size:12px;overflow-wrap:anywhere}
"""

SCRIPT = """
(function () {
  function key(cell) { var value = cell.getAttribute('data-sort'); return value === null || value === '' ? null : value; }
  function sortBy(table, column, th) {
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    var numeric = th.getAttribute('data-type') === 'number';
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[column]), y = key(b.cells[column]);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { cell.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.tabIndex = 0;
      th.title = 'sort by this column';
      th.addEventListener('click', function () { sortBy(table, column, th); });
      th.addEventListener('keydown', function (event) {
        if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); sortBy(table, column, th); }
      });
    });
  });
})();
"""

# Nothing may be fetched: images are data URIs, style and script are inline.
CONTENT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def build_page(rows: list, context: ReportContext, title: str = "LGIP report") -> str:
    """The whole page as one string."""
    sections = [section for section in (make(rows, context) for make in SECTIONS) if section is not None]
    sections[1:1] = probe_sections(rows, context)  # the probes' results right after the leaderboard
    nav = "".join(f'<a href="#{esc(section.anchor)}">{esc(section.title)}</a>' for section in sections)
    models = len({row["model_tag"] for row in rows} | set(context.selection.models if context.selection else []))
    summary = (f"{models} model(s), {len(rows)} metric row(s), {len(context.pair_files)} pair dump(s) · written "
               f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by lgip_report.py")
    body = "".join(f'<section id="{esc(section.anchor)}"><h2>{esc(section.title)}</h2>{section.body}</section>'
                   for section in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_POLICY}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f'<style>{STYLE}</style></head><body><header><h1>{esc(title)}</h1><p>{esc(summary)}</p>'
            f'<nav>{nav}</nav></header><main>{body}</main><script>{SCRIPT}</script></body></html>\n')


def write_html_report(path: str, rows: list, tools: ReportTools, pair_files: Sequence[str] = (),
                      examples: int = DEFAULT_EXAMPLES) -> int:
    """Choose the examples from `pair_files` (streaming), build the page and write it to
    `path` atomically. Returns the page's size in bytes."""
    selection = select_examples(pair_files, examples) if pair_files else None
    page = build_page(rows, ReportContext(tools=tools, selection=selection, pair_files=list(pair_files)))
    data = page.encode("utf-8")
    with atomic_output(path, "wb") as handle:
        handle.write(data)
    return len(data)
