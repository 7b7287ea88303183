"""Drift tests between a reference sample and what was served, from SciPy, corrected together for
multiple testing with statsmodels' ``multipletests``.

- class mix: a chi-square test of homogeneity (``scipy.stats.chi2_contingency``) between the reference's
  class counts and the served predictions' counts (the reference is a sample too, not known proportions);
- continuous values (confidence, image statistics, logits): the two-sample Kolmogorov-Smirnov test
  (``scipy.stats.ks_2samp``), one test per dimension.

All tests of one monitor run form one family: ``correct`` rejects them at a family-wise level ``alpha``
(Bonferroni, Holm) or a false discovery rate ``alpha`` (Benjamini-Hochberg, which under no drift at all is
also a family-wise level), so a window without drift raises an alarm with probability at most about
``alpha`` however many statistics are watched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

DriftKind = Literal["prediction", "confidence", "image", "embedding"]
Correction = Literal["fdr_bh", "bonferroni", "holm"]


@dataclass(frozen=True)
class DriftTest:
    """One test of one statistic: reference against served."""

    kind: DriftKind
    name: str
    statistic: float  # KS D, or the chi-square statistic
    p_value: float
    reference_n: int
    current_n: int
    reference_center: float = math.nan  # median (KS), nan for the class mix
    current_center: float = math.nan
    adjusted_p: float = math.nan  # after the family's correction
    rejected: bool = False

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


def ks_test(kind: DriftKind, name: str, reference: ArrayLike, current: ArrayLike) -> DriftTest:
    """Two-sample Kolmogorov-Smirnov test (two-sided) of ``current`` against ``reference``."""
    from scipy.stats import ks_2samp

    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError(f"{kind}:{name}: both samples need values (reference {len(ref)}, served {len(cur)})")
    result = ks_2samp(ref, cur)
    return DriftTest(
        kind=kind,
        name=name,
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        reference_n=len(ref),
        current_n=len(cur),
        reference_center=float(np.median(ref)),
        current_center=float(np.median(cur)),
    )


def class_mix_test(
    reference_counts: Mapping[str, int], predicted: Sequence[str], labels: Sequence[str]
) -> DriftTest:
    """Chi-square test of homogeneity: do the served predictions over ``labels`` mix the classes as the
    reference counts do? Predictions outside ``labels`` count in an extra column. Classes neither side
    has are left out (a zero column has no expected count)."""
    from scipy.stats import chi2_contingency

    known = list(labels)
    served = {label: 0 for label in known}
    other = 0
    for label in predicted:
        if label in served:
            served[label] += 1
        else:
            other += 1
    table = np.array(
        [
            [reference_counts.get(label, 0) for label in known] + [0],
            [served[label] for label in known] + [other],
        ],
        dtype=np.int64,
    )
    table = table[:, table.sum(axis=0) > 0]
    n_ref, n_cur = int(table[0].sum()), int(table[1].sum())
    if n_ref == 0 or n_cur == 0:
        raise ValueError(f"the class mix needs counts on both sides (reference {n_ref}, served {n_cur})")
    if table.shape[1] < 2:  # one class only, on both sides: nothing can differ
        return DriftTest("prediction", "class_mix", 0.0, 1.0, n_ref, n_cur)
    result = chi2_contingency(table, correction=False)
    return DriftTest("prediction", "class_mix", float(result.statistic), float(result.pvalue), n_ref, n_cur)


def holm(p_values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction: which hypotheses are rejected, and the adjusted p-values (the running
    maximum of ``(m - i) * p_(i)`` over the sorted p-values, at most 1). The same answers as statsmodels'
    ``multipletests(method="holm")``, which also runs a full garbage collection on every call (a second in
    a large process)."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p_values[order]), 1.0)
    return adjusted <= alpha, adjusted


def correct(tests: Sequence[DriftTest], alpha: float, method: Correction) -> list[DriftTest]:
    """The tests with adjusted p-values and which are rejected, corrected together as one family."""
    if not tests:
        return []
    p_values = np.array([t.p_value if math.isfinite(t.p_value) else 1.0 for t in tests])
    if method == "holm":
        rejected, adjusted = holm(p_values, alpha)
    else:
        from statsmodels.stats.multitest import multipletests

        rejected, adjusted, _, _ = multipletests(p_values, alpha=alpha, method=method)
    return [
        replace(test, adjusted_p=float(p), rejected=bool(r))
        for test, p, r in zip(tests, adjusted, rejected, strict=True)
    ]
