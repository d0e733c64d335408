"""Is my evaluation reliable? :func:`check_evaluation` reports attack-failure indicators
(Pintor et al., NeurIPS 2022; AutoAttack's flags; Carlini et al. 2019) for every task, each
with its value, threshold, status and fix (:class:`EvaluationReport`)."""

from .checks import check_evaluation
from .report import DEFAULT_THRESHOLDS, INDICATORS, CheckRow, EvaluationReport, Indicator, Status

__all__ = [
    "DEFAULT_THRESHOLDS",
    "INDICATORS",
    "CheckRow",
    "EvaluationReport",
    "Indicator",
    "Status",
    "check_evaluation",
]
