"""The solver benchmark runs and writes its plot (tiny sizes)."""

import math

import pytest

from comfyui_flowmatch.samplers import METHODS

from comfyui_flowmatch.samplers.bench import accuracy_table, overhead_ratio, plot

pytestmark = pytest.mark.unit


def test_bench_table_and_plot(tmp_path):
    rows = accuracy_table([8, 16], [1e-4])
    assert {r["method"] for r in rows} == set(METHODS)
    assert all(r["error"] > 0 and r["nfe"] > 0 for r in rows)
    assert [r["nfe"] for r in rows if r["method"] == "rk4"] == [32, 64]
    plot(rows, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_overhead_ratio_is_measured():
    ratio, ms, us = overhead_ratio("euler", 2, (1, 4, 8, 8), repeats=1)
    assert math.isfinite(ratio) and ratio > 0 and ms > 0 and math.isfinite(us)
