"""Hostile names and damaged files through the reports (issue: hostile input, the reports part).

Rows are built directly (``ResultRow`` / ``append_rows``, no training) with the names an attacker or a careless
user can put in them, then ``report`` and ``plot`` run through the real command line in this process:

- markup in a label is text on the HTML page (Jinja2 autoescape), in a real headless browser no script of it
  runs, and the page's Content-Security-Policy blocks one even where markup got in;
- no file is written outside ``--out`` whatever the dataset or label says (slugs, ``reports.paths``), and two
  names that simplify alike never share a file;
- a CSV cell a spreadsheet would run as a formula is neutralised, a ``|`` or a line break never breaks a Markdown
  table;
- damaged or out-of-range CSVs (torn line, accuracy 5, inf, seed 1.5, foreign certified.csv) are one error line
  naming the file and the line; ``NA`` is a label, not a missing value;
- labels and dataset names are checked where they enter (run, sweep, ``mmr.evaluate``).
"""

from __future__ import annotations

import csv
import functools
import math
import re
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from torch import nn

import mmrobust_bench as mmr
from mmrobust_bench.bench.flags import FLAG_NAMES
from mmrobust_bench.bench.results import ResultRow, append_rows
from mmrobust_bench.bench.validate import MAX_NAME, check_name
from mmrobust_bench.cli import main
from mmrobust_bench.reports.curves import run_plot_name
from mmrobust_bench.reports.leaderboard import CONTENT_SECURITY_POLICY, FLAG_TEXT
from mmrobust_bench.reports.paths import MAX_SLUG, output_path, slug
from mmrobust_bench.reports.tables import csv_safe, markdown_cell

from helpers import fixture_rows, run_browser

XSS = "jt <img src=x onerror=\"document.title='PWNED'\">"
PAGE_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "h1",
    "h2",
    "p",
    "span",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "code",
    "a",
    "ul",
    "li",
    "dl",
    "dt",
    "dd",
    "script",
}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def cells(dataset: str, label: str, *, seed: int = 0, flags: str = "", **changes) -> list[ResultRow]:
    """One model's rows: clean, the joint FGM / ℓ2-PGD of Table 1 (``flags`` on the PGD row), and uni-modal ℓ2-PGD
    curves on a and v."""
    common = dict(
        dataset=dataset,
        defense="jt",
        label=label,
        seed=seed,
        checkpoint_sha256=f"sha-{seed}",
        config_hash="c0ffee",
        library="native",
        library_version="0",
        norm="l2",
        n=100,
        wall_seconds=0.1,
        device="cpu",
        suite_version="0",
    )
    common.update(changes)
    plan = [("clean", "none", 0.0, 0.9), ("fgm", "all", 0.5, 0.6), ("pgd_l2", "all", 0.5, 0.5)]
    plan += [
        ("pgd_l2", m, e, a)
        for m, scale in (("a", 0.3), ("v", 0.1))
        for e, a in ((0.5, 0.8 - scale), (1.0, 0.7 - 2 * scale))
    ]
    return [
        ResultRow(
            attack=attack,
            attack_config=attack,
            modality=modality,
            eps=eps,
            accuracy=accuracy,
            flags=flags if (attack, modality) == ("pgd_l2", "all") else "",
            **common,
        )
        for attack, modality, eps, accuracy in plan
    ]


def store(path: Path, rows: list[ResultRow]) -> Path:
    append_rows(path, rows)
    return path


def cli(argv: list, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *fragments: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("mmrobust-bench: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert all(f in lines[0] for f in fragments), err
    return lines[0]


def listing(root: Path) -> set[Path]:
    return set(root.rglob("*"))


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_inert(page: str) -> None:
    """The page is the template's markup only: known tags, one script, no event-handler attribute."""
    tags = Tags(page).tags
    assert {t for t, _ in tags} <= PAGE_TAGS, {t for t, _ in tags} - PAGE_TAGS
    assert [t for t, _ in tags].count("script") == 1
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]


# ----------------------------------------------------------------------------- 1. stored XSS


def test_markup_in_a_label_is_text_and_runs_nothing_in_a_real_browser(tmp_path, capsys):
    results = store(
        tmp_path / "runs" / "results.csv",
        cells("synthav", XSS) + cells("synthav", "a <script>document.title='PWNED2'</script>"),
    )
    out = tmp_path / "out"
    rc, _, err = cli(["report", "--results", results, "--out", out, "--html", "--tables", "0"], capsys)
    assert rc == 0, err
    page = (out / "leaderboard-synthav.html").read_text()
    assert_inert(page)
    assert str(escape(XSS)) in page and "<img" not in page
    dom = run_browser(
        "--dump-dom", "--virtual-time-budget=3000", (out / "leaderboard-synthav.html").as_uri() + "#sort=clean&dir=asc"
    ).stdout
    assert "<tbody>" in dom
    assert "<title>mmrobust-bench leaderboard — synthav</title>" in dom and "PWNED" not in dom.split("<body>")[0]
    tags = [t for t, _ in Tags(dom).tags]
    assert "img" not in tags and tags.count("script") == 1  # the label became no element
    assert "&lt;img src=x onerror=" in dom and "&lt;script&gt;document.title" in dom  # but text
    assert 'aria-sort="ascending"' in dom  # the page's own script ran: the CSP lets exactly it through


def test_the_content_security_policy_blocks_markup_that_got_in_anyway(tmp_path):
    """Defence in depth: an inline handler and an inline script pasted into the page do not run under its CSP
    (and do without it, so the browser check can see them run)."""
    from mmrobust_bench.reports.leaderboard import write_leaderboard

    write_leaderboard(fixture_rows(), tmp_path, command="x")
    page = (tmp_path / "leaderboard-synthav.html").read_text()
    assert page.count(CONTENT_SECURITY_POLICY.replace("'", "&#39;")) == 1
    hostile = (
        "<img src=x onerror=\"document.title='PWNED'\">"
        "<script>document.body.setAttribute('data-pwned','yes')</script></body>"
    )
    guarded = tmp_path / "guarded.html"
    guarded.write_text(page.replace("</body>", hostile))
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page).replace("</body>", hostile))
    shown = {
        p.name: run_browser("--dump-dom", "--virtual-time-budget=3000", p.as_uri() + "#sort=clean&dir=asc").stdout
        for p in (guarded, bare)
    }
    assert "<title>PWNED</title>" in shown["bare.html"] and 'data-pwned="yes"' in shown["bare.html"]
    assert "<title>mmrobust-bench leaderboard — synthav</title>" in shown["guarded.html"]
    assert 'data-pwned="yes"' not in shown["guarded.html"]
    assert 'aria-sort="ascending"' in shown["guarded.html"]  # while the page's own script still runs


def test_flagged_cells_carry_a_marker_with_their_flags_and_the_page_a_legend(tmp_path, capsys):
    rows = (
        cells("synthav", "jt", flags="zero_gradients")
        + cells("synthav", "jt", seed=1, flags="zero_gradients;fgm_beats_pgd")
        + cells("synthav", "gb")
    )
    results = store(tmp_path / "results.csv", rows)
    rc, _, err = cli(["report", "--results", results, "--out", tmp_path / "out", "--html", "--tables", "0"], capsys)
    assert rc == 0, err
    page = (tmp_path / "out" / "leaderboard-synthav.html").read_text()
    flagged = re.findall(
        r'<td data-value="[^"]*"(?: title="[^"]*")? class="flagged" data-flags="([^"]+)">[^<]*'
        r'(?:<span class="sd">[^<]*</span>)? <span class="flag" title="([^"]+)"',
        page,
    )
    # jt's PGD on all at 0.5 (the only PGD column of the page's Table 1 cells), gb's row has none
    assert flagged == [
        ("fgm_beats_pgd;zero_gradients", "validity flags: fgm_beats_pgd (seed 1); zero_gradients (seeds 0, 1)")
    ]
    assert page.count('class="flag"') == 1
    legend = page.split('<dl class="legend">', 1)[1].split("</dl>", 1)[0]
    for name in FLAG_NAMES:
        assert f"<dt>\u2691 {name}</dt><dd>{escape(FLAG_TEXT[name])}</dd>" in legend


def test_every_flag_of_the_suite_has_a_legend_line():
    assert set(FLAG_NAMES) <= set(FLAG_TEXT), "add a legend line to reports/leaderboard.FLAG_TEXT"


# ----------------------------------------------------------------------------- 2. files only inside --out


def test_nothing_is_written_outside_out_whatever_the_names_say(tmp_path, capsys):
    escape = f"/../../../../../../..{tmp_path}/escaped/PWNED"
    long_label = "L" * 5000
    rows = []
    for label in ("a/b", "a_b", "../../x", long_label, "jt $\\frac$ x", XSS):
        for seed in (0, 1):
            rows += cells(escape, label, seed=seed)
    rows += cells("synthav", "crmt_jt") + cells("synthav", "jt")
    results = store(tmp_path / "runs" / "results.csv", rows)
    out = tmp_path / "out"
    before = listing(tmp_path)
    rc, _, err = cli(["report", "--results", results, "--out", out, "--html", "--pivot", "--findings"], capsys)
    assert rc == 0, err
    rc, _, err = cli(
        [
            "plot",
            "--results",
            results,
            "--out",
            out,
            "--figures",
            "1,4,5",
            "--ablation",
            "JT=jt,CRMT=crmt_jt,long=" + long_label,
        ],
        capsys,
    )
    assert rc == 0, err
    created = listing(tmp_path) - before
    assert created and all(p.is_relative_to(out) for p in created), sorted(map(str, created - set(out.rglob("*"))))
    assert not (tmp_path / "escaped").exists()
    assert all(len(p.name) < 120 for p in created)
    # every model its own card: a/b and a_b (and the 5000 characters) do not collide, nothing is overwritten
    cards = list((out / "cards").rglob("*.json"))
    assert len(cards) == len({p.name for p in cards}) == 6 * 2 + 2
    assert (out / "cards" / "synthav" / "jt-seed0.json").exists()
    assert (out / f"figure1-{slug(escape)}.png").exists() and (out / "figure1-synthav.png").exists()


def test_the_public_api_cannot_steer_report_files_out_of_out(tmp_path, capsys):
    """The issue's case end to end: mmr.evaluate(dataset="/../../…/PWNED", label=<markup>) then report --html."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.core = model

        def forward(self, audio, video):
            return self.core(torch.cat([audio, video], 1))

    wrapped = mmr.wrap(TwoInputs(), {"audio": mmr.Modality((4,)), "video": mmr.Modality((4,))}, call="positional")
    gen = torch.Generator().manual_seed(1)
    loader = [
        {
            "audio": torch.randn(8, 4, generator=gen),
            "video": torch.randn(8, 4, generator=gen),
            "label": torch.randint(0, 3, (8,), generator=gen),
        }
    ]
    results = tmp_path / "runs" / "results.csv"
    escape = f"/../../../../../../..{tmp_path}/x/PWNED"
    mmr.evaluate(
        wrapped, loader, attack="fgm", eps=[0.5], dataset=escape, label=XSS, results=str(results), check_flags=False
    )
    before = listing(tmp_path)
    rc, _, err = cli(["report", "--results", results, "--out", tmp_path / "out", "--html", "--pivot"], capsys)
    assert rc == 0, err
    assert all(p.is_relative_to(tmp_path / "out") for p in listing(tmp_path) - before)
    assert not (tmp_path / "x").exists()
    page = (tmp_path / "out" / f"leaderboard-{slug(escape)}.html").read_text()
    assert_inert(page)


def test_slugs_are_safe_short_and_never_shared_by_two_names():
    assert slug("jt") == "jt" and slug("crmt_jt_step1_only") == "crmt_jt_step1_only" and slug("synthav") == "synthav"
    assert slug("a/b") != slug("a_b") == "a_b" and slug("JT") != slug("jt")
    for name in ("..", ".", "", "/", "../../etc/passwd", ".hidden", "L" * 5000, "a" * (MAX_SLUG + 1)):
        s = slug(name)
        assert re.fullmatch(r"[a-z0-9][a-z0-9._]*(-[0-9a-f]{10})?", s) and len(s) <= MAX_SLUG + 11, (name, s)
    assert len(run_plot_name("synthav", "L" * 5000, "torchattacks:PGDL2", "a", 0, "b30dba0941e7")) < 160
    with pytest.raises(ValueError, match="outside the output directory"):
        output_path("/tmp/out", "../x")
    with pytest.raises(ValueError, match="outside the output directory"):
        output_path("/tmp/out", "/etc/passwd")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_slug_is_injective_and_file_safe(a, b):
    for name in (a, b):
        s = slug(name)
        assert re.fullmatch(r"[a-z0-9][a-z0-9._]*(-[0-9a-f]{10})?", s) and s not in (".", "..")
    assert (slug(a) == slug(b)) == (a == b)


# ----------------------------------------------------------------------------- 4. CSV and Markdown injection

FORMULAS = ["=cmd|' /C calc'!A0", "+SUM(A1)", "-2+3", "@SUM(A1)"]


def test_formula_cells_are_neutralised_in_exported_csvs_but_numbers_are_not(tmp_path, capsys):
    rows = [r for label in FORMULAS + ["-0.5"] for r in cells("synthav", label)]
    results = store(tmp_path / "results.csv", rows)
    rc, _, err = cli(["report", "--results", results, "--out", tmp_path / "out", "--pivot"], capsys)
    assert rc == 0, err
    for name in ("table1-synthav.csv", "pivot-synthav.csv"):
        with open(tmp_path / "out" / name, newline="", encoding="utf-8") as fh:
            table = list(csv.DictReader(fh))
        table = [r for r in table if r["source"] == "measured"]
        labels = {r["label"] for r in table}
        assert labels == {"'" + f for f in FORMULAS} | {"-0.5"}, labels  # -0.5 is a number, not a formula
        for record in table:
            assert record["method"] in labels
            for key, value in record.items():
                if key.endswith(("_mean", "_std", "_n", "ci95_low", "ci95_high")) and value:
                    assert math.isfinite(float(value))  # numbers stay numbers
    frame = csv_safe(pd.DataFrame({"t": ["=1", "-1e3", "\tx", "\r=1", "a"], "x": [-0.5, 1.0, 2.0, 3.0, 4.0]}))
    assert frame["t"].tolist() == ["'=1", "-1e3", "'\tx", "'\r=1", "a"] and frame["x"].tolist() == [-0.5, 1, 2, 3, 4]


def pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def assert_tables_intact(text: str) -> None:
    """Every Markdown table line has the header's number of unescaped pipes."""
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        header = header if header is not None else pipes(line)
        assert pipes(line) == header, line


def test_pipes_and_line_breaks_in_names_never_break_a_markdown_table(tmp_path, capsys):
    hostile = ["a|b\nc", "x\r\ny|", "back\\|slash", "`tick|`", "<b>bold</b>"]
    rows = [r for label in hostile + ["jt"] for r in cells("synthav", label)]
    rows += cells("data|set\nx", "jt")
    results = store(tmp_path / "results.csv", rows)
    out = tmp_path / "out"
    rc, _, err = cli(["report", "--results", results, "--out", out, "--pivot", "--findings"], capsys)
    assert rc == 0, err
    texts = {p.name: p.read_text() for p in out.glob("*.md")}
    assert len(texts) >= 6
    for name, text in texts.items():
        assert_tables_intact(text)
        assert name.startswith("findings") or "<b>" not in text, name  # findings show labels as code spans
    table = texts["table1-synthav.md"]
    assert "| a\\|b c |" in table and "&lt;b>bold&lt;/b>" in table
    assert markdown_cell("a|b\nc\\") == "a\\|b c\\\\"
    tex = (out / "table1-synthav.tex").read_text()
    assert "\n\n" not in tex.split(r"\begin{tabular}")[1]


# ----------------------------------------------------------------------------- 3. strict reading


def corrupt(path: Path, rows: list[ResultRow]) -> Path:
    return store(path, cells("synthav", "jt") + rows)


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"accuracy": 5.0}, "accuracy is 5.0, not a number in [0, 1]"),
        ({"accuracy": -1.0}, "accuracy is -1.0, not a number in [0, 1]"),
        ({"accuracy": math.inf}, "accuracy is inf, not a number in [0, 1]"),
        ({"eps": math.inf}, "eps is inf, not a finite number >= 0"),
        ({"seed": 1.5}, "seed is 1.5, not a whole number >= 0"),
        ({"n": -3}, "n is -3"),
    ],
)
def test_out_of_range_values_are_one_line_naming_file_and_line(tmp_path, capsys, changes, fragment):
    bad = [ResultRow(**{**vars(cells("synthav", "gb")[1]), **changes})]
    results = corrupt(tmp_path / "results.csv", bad)
    for command in (["report", "--html"], ["plot"]):
        rc, _, err = cli([command[0], "--results", results, "--out", tmp_path / "out", *command[1:]], capsys)
        assert_one_line_error(rc, err, f"{results} line 9: {fragment}")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.*"))


def test_a_torn_line_is_refused_not_reported_as_an_unknown_configuration(tmp_path, capsys):
    results = corrupt(tmp_path / "results.csv", [])
    with open(results, "a", encoding="utf-8") as fh:
        fh.write("synthav,jt,0,sha-0,c0ffee,pgd_l2,pgd_l2,nat")  # a write cut short
    rc, _, err = cli(["report", "--results", results, "--out", tmp_path / "out", "--html"], capsys)
    assert_one_line_error(rc, err, f"{results} line 9:", "fields where the header has")


def test_a_label_NA_is_a_label_not_a_missing_value(tmp_path, capsys):
    results = store(tmp_path / "results.csv", cells("synthav", "NA") + cells("synthav", "jt"))
    out = tmp_path / "out"
    rc, _, err = cli(["report", "--results", results, "--out", out, "--html"], capsys)
    assert rc == 0, err
    names = sorted(p.name for p in (out / "cards" / "synthav").iterdir())
    assert names == ["jt-seed0.json", f"{slug('NA')}-seed0.json"]
    page = (out / "leaderboard-synthav.html").read_text()
    assert '<td class="text" data-value="NA">NA</td>' in page and '<td class="text" data-value="JT">' in page
    assert "| NA |" in (out / "table1-synthav.md").read_text()


def test_certificates_and_eta_pairs_are_read_as_strictly(tmp_path, capsys):
    results = store(tmp_path / "results.csv", cells("synthav", "jt"))
    certified = tmp_path / "certified.csv"
    certified.write_text("dataset,defense,seed,foo\nsynthav,jt,0,1\n")
    rc, _, err = cli(["report", "--results", results, "--out", tmp_path / "out", "--html"], capsys)
    assert_one_line_error(
        rc,
        err,
        f"{certified} line 1: not a certificates file (certified.csv), the header lacks certificate, equation, variant",
    )
    rc, _, err = cli(["plot", "--results", results, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(rc, err, f"{certified} line 1: not a certificates file")
    head = (
        "dataset,defense,seed,checkpoint_sha256,certificate,equation,variant,modality,radius,n,certified_accuracy,"
        "median_certified_radius,honesty_certified,honesty_violations\n"
    )
    certified.write_text(
        head + "synthav,jt,0,sha-0,eq5,Eq. 5,min_j,all,0.5,100,0.5,inf,10,0\n"
        "synthav,jt,0,sha-0,eq5,Eq. 5,min_j,all,1.0,100,1.5,0.7,10,0\n"
    )
    rc, _, err = cli(["report", "--results", results, "--out", tmp_path / "out", "--findings"], capsys)
    assert_one_line_error(rc, err, f"{certified} line 3: certified_accuracy is 1.5, not a number in [0, 1]")
    certified.unlink()
    eta = tmp_path / "eta_pairs.csv"
    eta.write_text("dataset,defense,seed,modality,class_y,class_j,eta_pair\nsynthav,jt,0,a,0.5,1,2.0\n")
    rc, _, err = cli(["report", "--results", results, "--out", tmp_path / "out", "--findings"], capsys)
    assert_one_line_error(rc, err, f"{eta} line 2: class_y is 0.5, not a whole number >= 0")


def test_the_committed_leaderboards_read_strictly(capsys):
    from mmrobust_bench.bench.results import read_checked_certificates, read_checked_eta_pairs, read_checked_rows

    for root in sorted(Path(__file__).parents[1].glob("leaderboards/*/runs")):
        assert len(read_checked_rows(root / "results.csv")) > 0
        assert len(read_checked_certificates(root / "certified.csv")) > 0
        assert len(read_checked_eta_pairs(root / "eta_pairs.csv")) > 0


# ----------------------------------------------------------------------------- names checked at the door

BAD_NAMES = [
    ("a\nb", "a control character"),
    ("tab\there", "a control character"),
    ("nul\x00", "a control character"),
    ("rtl\u202eoverride", "an invisible formatting character"),
    ("x" * (MAX_NAME + 1), "characters; give at most"),
    (" padded", "starts or ends with spaces"),
    ("", "must not be empty"),
    ("a\u2028b", "a line separator"),
]


@pytest.mark.parametrize("name, fragment", BAD_NAMES)
def test_bad_names_are_one_line_errors(name, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)) as info:
        check_name(name, "label")
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_names_with_markup_slashes_and_formulas_are_accepted():
    for name in ("jt [cfg <img src=x onerror=alert(1)>]", "a/b", "=cmd|' /C calc'!A0", "NA", "x" * MAX_NAME, "ε-jt"):
        assert check_name(name, "label") == name


def test_run_sweep_and_evaluate_check_names_before_any_work(tmp_path, capsys):
    root = tmp_path / "root"
    rc, _, err = cli(["run", "--defense", "jt", "--root", root, "--label", "a\nb"], capsys)
    assert_one_line_error(rc, err, "label holds a control character")
    rc, _, err = cli(["run", "--defense", "jt", "--root", root, "--label", "L" * 5000], capsys)
    assert_one_line_error(rc, err, "label has 5000 characters")
    config = tmp_path / "sweep.yaml"
    config.write_text('seeds: [0]\ndefenses: [{defense: jt, label: "a\\tb"}]\n')
    rc, _, err = cli(["sweep", "--root", root, "--config", config], capsys)
    assert_one_line_error(rc, err, "label of defense entry", "a control character")
    assert not root.exists() or not list(root.rglob("*.safetensors"))
    with pytest.raises(ValueError, match="dataset holds a control character"):
        mmr.evaluate(None, [], dataset="x\ny")
    with pytest.raises(ValueError, match="label has 201 characters"):
        mmr.evaluate(None, [], label="x" * 201)


# ----------------------------------------------------------------------------- any name, end to end

NAMES = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            XSS,
            "../../x",
            "/../../../etc/PWNED",
            "a/b",
            "a_b",
            "=cmd|' /C calc'!A0",
            "NA",
            "nan",
            "",
            " ",
            ".",
            "..",
            "x\ny",
            "<script>alert(1)</script>",
            "a|b",
            "L" * 300,
            "jt [cfg <b>]",
            "&amp;",
            "$\\frac$",
            "-0.5",
        ]
    ),
)


@functools.cache
def template_markup() -> str:
    """The HTML page of two plain entries: text a hostile name may contain without being injected."""
    import contextlib
    import io

    with tempfile.TemporaryDirectory() as tmp:
        results = store(Path(tmp) / "results.csv", cells("plain", "jt") + cells("plain", "gb", seed=1))
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            assert main(["report", "--results", str(results), "--out", str(Path(tmp) / "out"), "--html"]) == 0
        return (Path(tmp) / "out" / "leaderboard-plain.html").read_text()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label=NAMES, dataset=NAMES)
def test_any_label_and_dataset_through_rows_report_and_html(label, dataset):
    try:
        check_name(label, "label")
        check_name(dataset, "dataset")
    except ValueError as exc:  # refused at the door: one clear line
        assert "\n" not in str(exc)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = store(tmp / "runs" / "results.csv", cells(dataset, label) + cells(dataset, "jt", seed=1))
        out = tmp / "out"
        before = listing(tmp)
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["report", "--results", str(results), "--out", str(out), "--html", "--pivot"])
        assert rc == 0 or (rc == 2 and "Traceback" not in err.getvalue()), err.getvalue()
        assert all(p.is_relative_to(out) for p in listing(tmp) - before)
        for page in out.glob("*.html"):
            text = page.read_text()
            assert_inert(text)
            if "<" in label and label not in template_markup():  # "<" or "<td" are the template's own markup
                assert label not in text


def test_a_certify_label_never_names_a_folder_outside_the_root():
    """``certify --label ../../x``: the certificate's folder is a slug of the label, inside <root>/certify."""
    from mmrobust_bench.io import file_slug

    for label in ("../../x", "a/b", "/etc/passwd", ".."):
        part = file_slug(label)
        assert "/" not in part and part not in (".", "..") and not part.startswith(".")
    assert file_slug("crmt_jt") == "crmt_jt" and file_slug("synthav") == "synthav"
    from mmrobust_bench.bench.validate import check_name

    with pytest.raises(ValueError, match="label"):
        check_name("bad\nlabel", "label")
