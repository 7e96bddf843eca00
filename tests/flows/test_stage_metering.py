"""Peak memory per pipeline stage (spex.audit.metering): each stage's figure is its own peak where the
kernel lets the mark be reset (Linux), so a large allocation in one stage does not show in the next."""

from __future__ import annotations

import numpy as np

from spex.audit.metering import StageMeter, current_rss_mib, peak_rss_mib, reset_peak


def test_each_stage_reports_its_own_peak():
    meter = StageMeter()
    with meter.stage("big"):
        block = np.ones(48 * 1024 * 1024 // 8)  # 48 MiB, touched
        assert block.sum() > 0
        del block
    with meter.stage("small"):
        pass
    with meter.stage("small"):  # a repeated stage keeps its largest peak and adds its seconds
        pass
    assert set(meter.seconds) == set(meter.peak_rss_mib) == {"big", "small"}
    report = meter.report()
    assert report["max"] == meter.peak_rss_mib["big"] == max(report["stages"].values())
    if report["mode"] == "per-stage":
        assert meter.peak_rss_mib["big"] - meter.peak_rss_mib["small"] > 40
    else:  # the reset was refused: the process's peak so far, never lower for a later stage
        assert meter.peak_rss_mib["small"] >= meter.peak_rss_mib["big"]


def test_peak_is_at_least_the_current_size():
    now = current_rss_mib()
    if reset_peak():
        assert now is not None and peak_rss_mib() >= now - 1
    assert peak_rss_mib() > 10
