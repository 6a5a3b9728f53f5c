"""Difference-spectrum agreement and its tables by band and by host."""

import numpy as np

from defectnet.difference import agreement, band_table, host_table


def test_agreement_reads_shape_and_amount_separately():
    truth = np.array([0.0, 1.0, -1.0, 0.5])
    got = agreement(0.5 * truth, truth)
    assert np.isclose(got["cosine"], 1.0) and np.isclose(got["norm_ratio"], 0.5)
    assert np.isclose(agreement(-truth, truth)["cosine"], -1.0)


def rows():
    """Three cells of two hosts; the twin misses the second cell of host B."""
    return [
        {"host": "A", "total": 0.005, "twin": {"cosine": 0.9, "norm_ratio": 1.2}},
        {"host": "B", "total": 0.08, "twin": {"cosine": 0.5, "norm_ratio": 0.4}},
        {"host": "B", "total": 0.2},
    ]


def test_band_table_puts_each_cell_in_its_band_and_in_all():
    table = {(r["band"], r["method"]): r for r in band_table(rows(), ["twin"])}
    assert table[("0.2–1 %", "twin")]["cells"] == 1
    assert table[("5–12 %", "twin")]["cosine"] == 0.5
    assert table[("all", "twin")]["cells"] == 2 and ("12–25 %", "twin") not in table


def test_host_table_shows_each_hosts_median_and_lowest_cosine():
    lines = host_table(rows(), ["twin", "other"]).splitlines()
    assert lines[2] == "| A | 1 | 0.90 / 1.20, 0.90 | — |"
    assert lines[3] == "| B | 2 | 0.50 / 0.40, 0.50 | — |"
