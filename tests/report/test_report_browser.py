"""The HTML report opened in a real headless browser (Debian's chromium): it loads with no console
message at all (no error, no script injected through the prompt), draws a non-blank page, and needs no
network (every resource is inline)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.report.report_fixtures import recorded_release

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    message = "no headless chromium found (apt-get install -y chromium)"
    if os.environ.get("SPEX_REQUIRE_CHROMIUM", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (SPEX_REQUIRE_CHROMIUM=1)", pytrace=False)
    pytest.skip(message)


def render(html: Path, out: Path) -> tuple[str, Path]:
    """Load ``html`` headless; returns (the browser's stderr log, the screenshot path)."""
    shot = out / "screenshot.png"
    proc = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-extensions", f"--user-data-dir={out / 'profile'}",
         f"--screenshot={shot}", "--window-size=1280,2000", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=3000", html.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.is_file(), f"no screenshot (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stderr, shot


@pytest.fixture
def release_report(tmp_path: Path) -> Path:
    from spex.records.metadata import MetadataStore
    from spex.report import write_audit_report

    with MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}") as store:
        _, release = recorded_release(store)
        paths = write_audit_report(store, release, tmp_path / "report")
    return paths["html"]


def test_the_report_is_self_contained(release_report):
    text = release_report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.I)
    assert "@import" not in text and "url(" not in text and "<link" not in text
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>food</b>" not in text and "&lt;b&gt;food&lt;/b&gt;" in text
    assert text.count("<script>") == 1  # the report's own few lines of JS, nothing from the data


def test_the_report_loads_in_chromium_without_console_messages(release_report, tmp_path):
    log, shot = render(release_report, tmp_path)
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert console == [], "\n".join(console)
    from PIL import Image, ImageStat

    image = Image.open(shot).convert("RGB")
    assert image.size[0] >= 1000 and image.size[1] >= 1000
    stat = ImageStat.Stat(image)
    assert max(stat.stddev) > 10, "the screenshot is blank"
    colours = image.resize((160, 250)).getcolors(maxcolors=100000) or []
    assert len(colours) > 20  # text, tables, shaded features, the heatmap


def dump_dom(html: Path, out: Path) -> str:
    """The DOM of ``html`` after Chromium loaded it and ran its script."""
    proc = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-extensions", f"--user-data-dir={out / 'dom-profile'}",
         "--virtual-time-budget=3000", "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0 and "</html>" in proc.stdout, f"no DOM (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_the_ranking_shows_each_interval_and_the_gates_their_state_in_chromium(tmp_path):
    """In the DOM Chromium built: every top interaction with its ± standard error, its 95 % interval as
    numbers and as a bar on one scale shared by the rows (zero in one place, each bar as wide as its
    interval, the value inside it); an unknown interval says so; the undecided gate reads undecided."""
    from spex.records.metadata import MetadataStore
    from spex.report import write_audit_report
    from tests.report.dom import parse
    from tests.report.report_fixtures import standard_error

    with MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}") as store:
        _, release = recorded_release(store)
        paths = write_audit_report(store, release, tmp_path / "report")
        (subject,) = store.get_audit(release).subjects
        recorded = store.get_interactions(release, subject.subject.id, index="fbii").head(5)
    page = parse(dump_dom(paths["html"], tmp_path))

    ranking = page.find("table", "ranking")
    header = [th.text() for th in ranking.find_all("th")]
    assert header == ["rank", "interaction", "order", "value", "± se", "95 % interval"]
    rows = [tr for tr in ranking.find_all("tr") if "data-members" in tr.attrs]
    assert len(rows) == 5
    scales, zeros = [], set()
    for tr, r in zip(rows, recorded.itertuples()):
        cells = tr.find_all("td")
        assert cells[0].text() == str(r.rank)
        bar = tr.find("svg", "ci-bar")
        zeros.add(bar.find("line", "zero").attrs["x1"])
        tick = float(bar.find("line", "pt").attrs["x1"])
        if r.rank == 3:  # the fixture's unknown standard error
            assert np.isnan(standard_error(3)) and np.isnan(r.se)
            assert cells[4].text() == "–" and cells[5].find("span", "ci-text").text() == "–"
            assert bar.find_all("rect") == []
            continue
        assert r.se == standard_error(r.rank)
        assert cells[4].text() == f"±{r.se:.2g}"
        assert cells[5].find("span", "ci-text").text() == f"[{r.ci_low:.3g}, {r.ci_high:.3g}]"
        assert "clear" in cells[5].classes  # these intervals all exclude zero
        rect = bar.find("rect", "iv")
        x, width = float(rect.attrs["x"]), float(rect.attrs["width"])
        assert x <= tick <= x + width
        scales.append(width / (r.ci_high - r.ci_low))
        assert f"95 % interval [{r.ci_low:.3g}, {r.ci_high:.3g}]" in bar.find("title").text()
    assert len(zeros) == 1  # one scale for the whole table
    assert max(scales) / min(scales) < 1.03  # widths in proportion to the intervals (bars round to 0.01 px)

    gates = {tr.find_all("td")[0].text(): tr for tr in page.find_all("tr") if tr.find_all("td", "result")}
    assert gates["max_significant_changes"].classes == {"undecided"}
    assert gates["max_significant_changes"].find("td", "result").text() == "undecided"
    assert gates["max_rank_shift"].find("td", "result").text() == "FAIL"
    assert gates["faithfulness_min"].find("td", "result").text() == "pass"
    assert page.find("span", "badge").text() == "FAIL"  # failed gates outrank the undecided one
