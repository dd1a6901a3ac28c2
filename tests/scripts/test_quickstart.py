"""lgip_quickstart.py run once as a newcomer runs it: the whole pipeline offline, then its
HTML report rendered in headless Chromium: what a reader sees, checked in the live DOM after the page's script ran (not in the page source). The numbers are
read from the metric files themselves; sorting is tested with real mouse clicks; every
thumbnail must have loaded; the page must fetch nothing; the screenshot must not be blank.

Chromium comes from the Debian packages (`.ci/run` installs it). Without it the test is
skipped on a developer's machine and fails under CI, where it must run.
"""
import glob
import io
import json
import os

import pytest
from PIL import Image, ImageStat

import lgip_quickstart
from tests.browser import Chromium, find_chromium
from tests.helpers import read_jsonl, run_script

MIN_SCREENSHOT_STDDEV = 20.0  # grey-level spread of a page with tables, plots and images (a blank page: ~0)
LEADERBOARD_CELLS = "Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent.trim()))"


def chromium_or_skip():
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not on PATH; .ci/run installs it (apt-get install chromium)")
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    return binary


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """lgip_quickstart.py run once with its defaults (about 20 s): (output folder, CompletedProcess)."""
    out = tmp_path_factory.mktemp("quickstart")
    return out, run_script("lgip_quickstart.py", "--output-dir", out)


@pytest.fixture(scope="module")
def quickstart(quickstart_run):
    """The quickstart's output folder, once Chromium is known to be here."""
    chromium_or_skip()
    out, result = quickstart_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"file://{out / 'report.html'}" in result.stdout  # it says where the page is
    return out


def expected_rows(folder):
    """{(model tag, input file name): (invariance error, sensitivity gap, positive rate)}
    as the page should show them, straight from the per-model metric files."""
    expected = {}
    for path in glob.glob(str(folder / "*.metrics.json")):
        if path.endswith("_ALL.metrics.json"):
            continue
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
        for entry in payload if isinstance(payload, list) else [payload]:
            if "sensitivity_gap_mean" in entry:  # run_lgip_multi.py
                values = entry["invariance_error_mean"], entry["sensitivity_gap_mean"], entry["sensitivity_pos_rate"]
            else:  # run_lgip_by_fliptype.py
                values = (entry["invariance_error_mean"], entry["global_sensitivity"]["gap_mean"],
                          entry["global_sensitivity"]["pos_rate"])
            expected[(entry["model_tag"], os.path.basename(entry["config"]["input"]))] = values
    return expected


def column_values(rows, column):
    return [float(row[column].split(" ")[0]) for row in rows]


def test_quickstart_runs_the_whole_pipeline_offline(quickstart_run):
    out, result = quickstart_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ["lgip_quickstart_base.jsonl", "lgip_quickstart_base_with_perturb.jsonl", "lgip_table.csv",
                 "lgip_frontier.png", "lgip_flip_types.png", "lgip_quickstart_base_with_fliptypes__LGIP_fliptypes.metrics.json"]:
        assert (out / name).exists(), name
    assert "RANDOM weights" in result.stdout and "Everything is in" in result.stdout
    assert len(read_jsonl(out / "lgip_quickstart_base.jsonl")) == lgip_quickstart.N_IMAGES


def test_quickstart_page_renders_sorts_and_shows_its_images(quickstart, tmp_path):
    page = quickstart / "report.html"
    expected = expected_rows(quickstart)
    assert len(expected) == 4  # two models on two inputs
    with Chromium(chromium_or_skip(), tmp_path / "profile") as browser:
        browser.call("Network.enable")
        browser.call("Page.enable")
        browser.events.clear()  # from here on: this page's events only
        browser.call("Page.navigate", url=page.as_uri())
        browser.wait_for("Page.loadEventFired")

        header = browser.evaluate("Array.from(document.querySelectorAll('#leaderboard thead th')).map(h => h.textContent)")
        columns = [next(i for i, label in enumerate(header) if label.startswith(prefix))
                   for prefix in ("invariance error", "sensitivity gap", "positive rate")]
        rows = browser.evaluate(LEADERBOARD_CELLS)
        shown = {(row[0], row[1]): tuple(row[c] for c in columns) for row in rows}
        assert set(shown) == set(expected) and len(rows) == len(expected)
        for identity, (error, gap, rate) in expected.items():
            cells = shown[identity]
            assert cells[0].startswith(f"{error:.4f} [") and cells[1].startswith(f"{gap:.4f} [")
            assert cells[2].startswith(f"{rate:.3f} [")

        # Sort by the sensitivity gap with real clicks on its header: ascending, then descending.
        centre = browser.evaluate(f"(() => {{ const th = document.querySelectorAll('#leaderboard thead th')[{columns[1]}];"
                                  "th.scrollIntoView(); const r = th.getBoundingClientRect();"
                                  "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        browser.click(*centre)
        ascending = browser.evaluate(LEADERBOARD_CELLS)
        browser.click(*centre)
        descending = browser.evaluate(LEADERBOARD_CELLS)
        gaps_up, gaps_down = column_values(ascending, columns[1]), column_values(descending, columns[1])
        assert gaps_up == sorted(gaps_up) and gaps_down == sorted(gaps_down, reverse=True)
        assert sorted(ascending) == sorted(rows) == sorted(descending)  # the same rows, reordered
        assert rows != ascending or rows != descending
        assert browser.evaluate(f"document.querySelectorAll('#leaderboard thead th')[{columns[1]}]"
                                ".getAttribute('aria-sort')") == "descending"

        thumbnails = browser.evaluate("Array.from(document.querySelectorAll('img.thumb'))"
                                      ".map(i => [i.complete, i.naturalWidth])")
        assert len(thumbnails) >= 12 and all(complete and width > 0 for complete, width in thumbnails)
        assert browser.evaluate("document.querySelectorAll('.noimage').length") == 0
        cards = browser.evaluate("document.querySelectorAll('#examples figure.card').length")
        marks = browser.evaluate("document.querySelectorAll('#examples figure.card mark').length")
        assert cards >= 12 and marks >= cards  # every example shows what its variant changed
        plots = browser.evaluate("Array.from(document.querySelectorAll('figure.plot img')).map(i => i.naturalWidth)")
        assert len(plots) == 2 and min(plots) > 0

        browser.call("Emulation.setScrollbarsHidden", hidden=True)
        browser.evaluate("window.scrollTo(0, 0)")
        png = browser.screenshot()
        requested = [params["request"]["url"] for name, params in browser.events if name == "Network.requestWillBeSent"]
    assert requested and all(url.split(":", 1)[0] in ("file", "data") for url in requested), requested
    (tmp_path / "report.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("L")
    assert image.size[0] >= 1000 and ImageStat.Stat(image).stddev[0] > MIN_SCREENSHOT_STDDEV
