"""The headless progress bar: counts, rate and ETA."""

from __future__ import annotations

import io

from model.progress import ProgressBar, format_seconds


def test_format_seconds() -> None:
    assert format_seconds(75) == "1:15"
    assert format_seconds(3725) == "1:02:05"
    assert format_seconds(-3) == "0:00"


def test_bar_prints_count_and_eta_per_line_when_not_a_tty() -> None:
    out = io.StringIO()
    bar = ProgressBar(4, stream=out)
    assert bar.eta() is None
    bar.update(1, "a.png")
    bar.update(1, "b.png")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "2/4" in lines[1] and "b.png" in lines[1] and "ETA" in lines[1] and "?" not in lines[1]
    assert bar.eta() is not None and bar.eta() >= 0


def test_a_time_budget_bar_shows_percent_and_no_rate() -> None:
    out = io.StringIO()
    bar = ProgressBar(100, stream=out, percent=True)
    bar.update(37, "step 12, epoch 1 loss 0.800")
    line = out.getvalue().splitlines()[-1]
    assert "37 %" in line and "/s" not in line and "/100" not in line and "step 12" in line
