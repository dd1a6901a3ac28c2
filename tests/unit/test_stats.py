"""lgip/stats.py on small arrays: the release's pooled means and gap summaries, and
bootstrap intervals that resample images."""
import numpy as np
import pytest

from lgip.stats import Bootstrap, gap_summary, mean_or_none


def test_bootstrap_interval_contains_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    widths = []
    for records in (50, 800):
        values = rng.normal(0.3, 0.1, size=records * 6)
        owners = np.repeat(np.arange(records), 6)
        bootstrap = Bootstrap(records, 500, seed=0)
        bootstrap.add("mean", values, owners)
        low, high = bootstrap.intervals()["mean"]
        assert low < values.mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_bootstrap_resamples_records_not_pairs_and_is_seeded():
    # Every pair of a record has the record's value: a resample of records can only give
    # means of whole records, and with one record the interval is that record's value.
    values = np.array([1.0, 1.0, 1.0, 5.0])
    owners = np.array([0, 0, 0, 1])
    first, again = Bootstrap(2, 200, seed=4), Bootstrap(2, 200, seed=4)
    for bootstrap in (first, again):
        bootstrap.add("pooled", values, owners)
    low, high = first.intervals()["pooled"]
    assert (low, high) == (1.0, 5.0)  # all of record 0, all of record 1: both occur in 200 draws
    assert first.intervals() == again.intervals()
    single = Bootstrap(1, 50, seed=0)
    single.add("pooled", np.array([0.25, 0.75]), np.array([0, 0]))
    assert single.intervals() == {"pooled": [pytest.approx(0.5), pytest.approx(0.5)]}


def test_weighted_means_and_no_resamples():
    bootstrap = Bootstrap(3, 300, seed=0)
    bootstrap.add("weighted", np.array([0.0, 1.0, 1.0]), np.array([0, 1, 2]), weights=[3.0, 1.0, 0.0])
    low, high = bootstrap.intervals()["weighted"]
    assert 0.0 <= low <= 0.25 <= high <= 1.0  # the weighted mean 1/4 lies inside
    assert Bootstrap(3, 0, seed=0).intervals() == {}


def test_release_means_and_gap_summaries():
    assert mean_or_none(np.array([], dtype=np.float32)) is None
    assert mean_or_none(np.array([0.1, 0.2], dtype=np.float32)) == pytest.approx(0.15)
    assert isinstance(mean_or_none(np.array([1, 2])), float)
    assert gap_summary(np.array([])) == {"gap_mean": None, "pos_rate": None, "count": 0}
    summary = gap_summary(np.array([0.1, -0.2, 0.4, 0.0]))
    assert summary == {"gap_mean": pytest.approx(0.075), "pos_rate": 0.5, "count": 4}  # a zero gap is not positive
