"""The HTML leaderboard in a real headless browser: it renders (screenshot pixel statistics), sorts on load from
the address (DOM dump), and links every model's card. Skipped only when no chromium is installed; CI installs
one (.ci/run) and sets MMROBUST_REQUIRE_BROWSER=1, which turns the skip into a failure."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmrobust_bench.reports.leaderboard import write_leaderboard
from mmrobust_bench.reports.tables import Column, cell_summary
from test_reports import fixture_rows

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars"]
HEADER_RGB = (0x1F, 0x4E, 0x79)  # th background in the page's CSS


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    reason = ("no chromium found on PATH (looked for " + ", ".join(BROWSERS)
              + "); install it with `apt-get install -y chromium`")
    if os.environ.get("MMROBUST_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " — MMROBUST_REQUIRE_BROWSER=1 (CI) requires it")
    pytest.skip(reason)


def run_browser(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([browser(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    rows = fixture_rows()
    (out / "figure1-synthav.png").write_bytes(b"\x89PNG")  # a figure beside the page gets linked
    paths = write_leaderboard(rows, out, command="mmrobust-bench report --html")
    return out, rows, paths


def test_page_is_self_contained_and_links_cards_and_figures(page):
    out, rows, paths = page
    html_path = out / "leaderboard-synthav.html"
    assert html_path in paths
    text = html_path.read_text()
    assert "<script src" not in text and "<link " not in text and "http" not in text  # nothing fetched
    links = re.findall(r'href="([^"]+)"', text)
    cards = [link for link in links if link.startswith("cards/")]
    assert len(cards) == rows.groupby(["defense", "seed"]).ngroups == 30
    for link in cards:
        card = json.loads((out / link).read_text())
        assert card["dataset"] == "synthav" and card["checkpoint_sha256"]
    assert "figure1-synthav.png" in links


def test_screenshot_shows_the_rendered_table(page, tmp_path):
    out, _, _ = page
    shot = tmp_path / "shot.png"
    result = run_browser(f"--screenshot={shot}", "--window-size=1400,900",
                         (out / "leaderboard-synthav.html").as_uri())
    assert shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (900, 1400)
    assert pixels.std() > 20  # not a blank page
    header = np.all(np.abs(pixels - np.array(HEADER_RGB)) <= 3, axis=-1)
    rows_with_header = np.flatnonzero(header.sum(axis=1) > 700)
    assert len(rows_with_header) >= 15  # a header band at least 15 px high across half the window: the table drew
    dark = (pixels.sum(axis=-1) < 200).sum()
    assert dark > 5000  # and text in it


def test_sort_from_the_address_reorders_the_rows(page):
    out, rows, _ = page
    key = "pgd_l2_a_eps1"
    result = run_browser("--dump-dom", "--virtual-time-budget=3000",
                         (out / "leaderboard-synthav.html").as_uri() + f"#sort={key}&dir=asc")
    dom = result.stdout
    assert "<tbody>" in dom, result.stderr[-2000:]
    assert re.search(rf'<th data-key="{key}"[^>]*aria-sort="ascending"', dom)
    body = dom.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    shown = re.findall(r'<tr><td class="text" data-value="([^"]+)"', body)
    column = Column("pgd_l2", "a", 1.0)
    means = {label: cell_summary(rows[rows["defense"] == label], column).mean for label in rows["defense"].unique()}
    from mmrobust_bench.reports.paper import method_name

    expected = [method_name(label) for label in sorted(means, key=lambda lab: means[lab])]
    assert shown == expected
    # and descending, the default direction for a number
    result = run_browser("--dump-dom", "--virtual-time-budget=3000",
                         (out / "leaderboard-synthav.html").as_uri() + f"#sort={key}")
    body = result.stdout.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert re.findall(r'<tr><td class="text" data-value="([^"]+)"', body) == expected[::-1]


def test_one_row_per_configuration(tmp_path):
    rows = fixture_rows()
    other = rows[rows["defense"] == "jt"].assign(config_hash="ffffffffffff", accuracy=0.2)
    write_leaderboard(pd.concat([rows, other], ignore_index=True), tmp_path, command="x")
    text = (tmp_path / "leaderboard-synthav.html").read_text()
    assert "JT [cfg ffffffff]" in text and "JT [cfg c]" in text
    card = json.loads((tmp_path / "cards" / "synthav" / "jt_cfg_ffffffff-seed0.json").read_text())
    assert card["config_hash"] == "ffffffffffff" and card["clean_accuracy"] == pytest.approx(0.2)
