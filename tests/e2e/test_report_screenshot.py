"""The campaign report as a person sees it: rendered by headless Chromium, first screen first.

A demo's summary (the one of ``docs/report.png``) goes through ``write_report``; Chromium draws
the page at 1280 x 900. The verdict (what happened, what to do next) has to fill the top of that
first screen, and the plots must be pictures, not broken images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelloop_console.report import screenshot, write_report

pytestmark = [pytest.mark.e2e]

SUMMARY = Path(__file__).parents[2] / "docs" / "report-summary.json"
VERDICT_BACKGROUND = (0xF4, 0xF8, 0xFB)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_first_screen_is_the_verdict_and_the_plots_render(tmp_path: Path) -> None:
    summary = json.loads(SUMMARY.read_text())
    page = tmp_path / "report.html"
    write_report(summary, page)
    first = tmp_path / "first.png"
    screenshot(page, first, width=1280, height=900)
    pixels = np.asarray(Image.open(first).convert("RGB"))
    assert pixels.shape == (900, 1280, 3)

    verdict = np.all(pixels == VERDICT_BACKGROUND, axis=2)
    rows = np.flatnonzero(verdict.mean(axis=1) > 0.3)  # rows mostly of the verdict's box
    assert rows.size > 300, "the verdict box fills a good part of the first screen"
    assert rows.min() < 200, "and starts near its top"

    whole = tmp_path / "whole.png"
    screenshot(page, whole, width=1280, height=2600)
    below = np.asarray(Image.open(whole).convert("RGB"))[int(rows.max()) + 10 :]
    # four plots: blue curves, bars and matrix cells (a broken image draws none of them)
    blue = (below[..., 2] > 150) & (below[..., 0] < 80) & (below[..., 1] < 160)
    assert blue.sum() > 5_000
