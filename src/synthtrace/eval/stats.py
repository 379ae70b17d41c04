"""The figures an evaluation reports, with their uncertainty: pass@1, pass@k, and a paired comparison.

- `pass_at_k(n, c, k)`: the unbiased estimate of the chance that at least one of k samples is
  right, from n samples of which c were (Chen et al., 2021: 1 - C(n-c, k) / C(n, k)).
- `wilson(successes, n)`: the Wilson score interval of a proportion (95 % by default), which stays
  inside [0, 1] and behaves at 0 and n, unlike the normal approximation.
- `mean_interval(values)`: a mean over items with its normal-approximation interval (for pass@k,
  whose per-item values are not 0 or 1).
- `paired(a, b)`: two evaluations of the same items, one outcome (right or not) per item each: the
  difference in pass rate, its interval (the paired normal approximation), and McNemar's exact
  test on the items where they disagree (a two-sided binomial test with p = 1/2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of `k` samples drawn from these `n` (with `c` right) is right."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """A proportion and its Wilson score interval."""
    if n == 0:
        return Interval(0.0, 0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], z: float = Z95) -> Interval:
    """A mean and its normal-approximation interval, clipped to [0, 1]."""
    n = len(values)
    if n == 0:
        return Interval(0.0, 0.0, 1.0)
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, 0.0, 1.0)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return Interval(mean, max(0.0, mean - half), min(1.0, mean + half))


@dataclass(frozen=True)
class Paired:
    items: int
    a_only: int  # right in a, wrong in b
    b_only: int  # right in b, wrong in a
    difference: Interval  # pass rate of b minus that of a
    p_value: float  # McNemar's exact test, two-sided

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "a_only": self.a_only, "b_only": self.b_only,
                "difference": self.difference.as_dict(), "p_value": round(self.p_value, 6)}


def paired(a: Sequence[bool], b: Sequence[bool], z: float = Z95) -> Paired:
    """Evaluation `b` against `a` on the same items (in the same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same items: {len(a)} against {len(b)}")
    n = len(a)
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    if n == 0:
        return Paired(0, 0, 0, Interval(0.0, -1.0, 1.0), 1.0)
    diff = (b_only - a_only) / n
    var = ((a_only + b_only) - (b_only - a_only) ** 2 / n) / (n * n)
    half = z * math.sqrt(max(0.0, var))
    return Paired(n, a_only, b_only, Interval(diff, max(-1.0, diff - half), min(1.0, diff + half)),
                  mcnemar_exact(a_only, b_only))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided p-value of McNemar's exact test: the discordant pairs as a binomial with p = 1/2."""
    m = a_only + b_only
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(a_only, b_only) + 1)) / 2 ** m
    return min(1.0, 2 * tail)
