"""lgip_report.py's statistics in-process: Spearman's rank correlation and the table of
correlations between retrieval and LGIP metrics."""
import pytest

import lgip_report


def test_spearman_and_correlate():
    assert lgip_report.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert lgip_report.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert lgip_report.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)  # 1 - 6*4/(5*24)
    assert lgip_report.spearman([1, 2], [1, 2]) is None
    rows = [{"i2t_r1": r, "t2i_r1": r, "invariance_error": e, "sensitivity_gap": g, "pos_rate": p}
            for r, e, g, p in [(0.1, 0.3, 0.01, 0.5), (0.2, 0.2, 0.02, 0.6), (0.3, 0.1, 0.03, 0.7)]]
    correlation = lgip_report.correlations(rows)
    assert correlation[("R@1 image→text", "invariance error")] == (pytest.approx(-1.0), 3)
    assert correlation[("R@1 text→image", "positive rate")] == (pytest.approx(1.0), 3)
