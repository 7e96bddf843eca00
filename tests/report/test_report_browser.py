"""The HTML report opened in a real headless browser (Debian's chromium): it loads with no console
message at all (no error, no script injected through the prompt), draws a non-blank page, and needs no
network (every resource is inline)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

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
