"""lgip/stats.py on small arrays: bootstrap intervals that resample images."""
import numpy as np

from lgip.stats import Bootstrap


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
