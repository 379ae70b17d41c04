"""The evaluation figures against values worked out by hand (and published tables)."""

from __future__ import annotations

import pytest

from synthtrace.eval.stats import mcnemar_exact, mean_interval, paired, pass_at_k, wilson


def test_pass_at_k_is_the_unbiased_estimate():
    assert pass_at_k(10, 0, 1) == 0 and pass_at_k(10, 10, 1) == 1
    assert pass_at_k(10, 5, 1) == pytest.approx(0.5)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(8, 1, 8) == 1.0
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(4, 5, 1)


def test_wilson_intervals_match_the_textbook_values():
    half = wilson(5, 10)
    assert (half.estimate, round(half.low, 4), round(half.high, 4)) == (0.5, 0.2366, 0.7634)
    none = wilson(0, 10)
    assert (none.low, round(none.high, 4)) == (0.0, 0.2775)
    assert wilson(0, 0).as_dict() == {"estimate": 0.0, "low": 0.0, "high": 1.0}


def test_a_paired_comparison_counts_the_discordant_items_and_tests_them_exactly():
    a = [True, True, False, False, False, False, False, False]
    b = [True, True, True, True, True, True, True, False]
    p = paired(a, b)
    assert (p.items, p.a_only, p.b_only) == (8, 0, 5)
    assert p.difference.estimate == pytest.approx(5 / 8) and p.difference.low > 0
    assert p.p_value == pytest.approx(2 / 32)  # McNemar exact: 2 * (1/2)^5
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)  # the binomial test of 1 in 7 at p = 1/2, two-sided
    assert paired([True, False], [True, False]).p_value == 1.0
    with pytest.raises(ValueError, match="same items"):
        paired([True], [True, False])


def test_mean_interval_of_per_item_pass_at_k():
    m = mean_interval([1.0, 0.5, 0.0, 0.5])
    assert m.estimate == 0.5 and 0.0 <= m.low < 0.5 < m.high <= 1.0
