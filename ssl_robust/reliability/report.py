"""The report of :func:`~ssl_robust.reliability.check_evaluation`: the indicators, their
thresholds and fixes, one :class:`CheckRow` each, and the :class:`EvaluationReport`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .. import _checks

__all__ = [
    "DEFAULT_THRESHOLDS",
    "INDICATORS",
    "CheckRow",
    "EvaluationReport",
    "Indicator",
    "Status",
]

Status = Literal["pass", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Indicator:
    """An attack-failure indicator: default threshold, status when exceeded, meaning, fix."""

    threshold: float
    severity: Literal["warn", "fail"]
    meaning: str
    fix: str


#: Every indicator: its default threshold (a fraction in [0, 1]), the status when its value
#: exceeds it, what the value measures and what to do when it is exceeded.
INDICATORS: dict[str, Indicator] = {
    "unavailable_gradients": Indicator(
        0.0, "fail",
        "share of samples whose input gradient of the attack loss is zero or non-finite at "
        "the attack's start point",
        "the model masks its gradients (a stop-gradient, a non-differentiable preprocessing "
        "such as rounding or JPEG, saturated outputs): evaluate with Square (black-box), or "
        "BPDA (replace the non-differentiable part by a differentiable approximation in the "
        "backward pass)",
    ),
    "randomized_outputs": Indicator(
        0.0, "fail",
        "share of samples whose output changes between repeated forwards of the same input",
        "the model is randomized: attack with EOT (eot_iter=K, e.g. 20, on every attack; "
        'strong_attack(..., version="rand")) and report the mean over several evaluations',
    ),
    "noise_sensitivity": Indicator(
        0.1, "warn",
        "share of samples that random noise of a quarter of eps damages by more than half the "
        "way to the floor",
        "predictions are unstable under tiny random noise: gradients at single points are "
        "unreliable; use EOT (eot_iter) and Square, and check that the clean metric is stable",
    ),
    "probability_outputs": Indicator(
        0.5, "fail",
        "share of samples whose outputs are non-negative and sum to 1 over the class "
        "dimension (probabilities instead of logits)",
        "the attack loss is computed on probabilities (cross-entropy on softmax outputs "
        "vanishes): attack the logits (drop the final softmax) or use a margin/DLR loss "
        "(APGD(loss='dlr'), Square)",
    ),
    "silent_success": Indicator(
        0.0, "fail",
        "share of samples for which the attack saw a worse iterate than the one it returned "
        "(a successful iterate, or a higher loss)",
        "return the best iterate per sample (select='best', the default), not the last",
    ),
    "incomplete_optimization": Indicator(
        0.2, "warn",
        "share of samples (not yet broken) whose attack score still rose by more than 5% of "
        "its range over the last 20% of the steps",
        "run more steps (steps=2x) or the APGD schedule (schedule='apgd'); use "
        "strong_attack",
    ),
    "unconstrained_attack": Indicator(
        0.1, "fail",
        "gap of the mean normalized damage to the floor (1) when eps is the whole image range "
        "(L-inf 1, L2 the image diagonal): an unbounded attack must reach the floor",
        "the attack cannot even reach the floor without a budget: gradients are masked or the "
        "loss is wrong; try Square, EOT, BPDA, another loss",
    ),
    "eps_monotonicity": Indicator(
        0.05, "warn",
        "largest drop of the mean normalized damage when eps grows over the sweep "
        "(eps/4, eps/2, eps, 2 eps, unbounded)",
        "a larger budget must never help the model: the attack is unreliable (masked "
        "gradients, too few steps or a bad step size); use APGD, more steps, Square",
    ),
    "more_steps": Indicator(
        0.03, "warn",
        "increase of the mean normalized damage with twice the steps (queries for Square)",
        "the attack has not converged: report the result with more steps or strong_attack",
    ),
    "more_restarts": Indicator(
        0.03, "warn",
        "increase of the mean normalized damage with two extra random restarts",
        "the result depends on the random start: use restarts (restarts=K) or strong_attack",
    ),
    "square_beats_white_box": Indicator(
        0.02, "fail",
        "share of samples where Square (black-box, no gradients) does more damage than the "
        "white-box attack (by more than 5% of the way to the floor)",
        "the white-box attack is failing (gradient masking): report the worst case over "
        'white-box and Square (strong_attack(..., version="plus")) and look for the cause',
    ),
    "transfer": Indicator(
        0.02, "fail",
        "share of samples where examples crafted on the surrogate model do more damage than "
        "the white-box attack on the model itself",
        "the white-box attack is failing on this model (masked gradients): add the transfer "
        "attack to the evaluation and attack a differentiable approximation (BPDA)",
    ),
}  # fmt: skip

#: The default threshold of every indicator.
DEFAULT_THRESHOLDS: dict[str, float] = {k: v.threshold for k, v in INDICATORS.items()}


@dataclass(frozen=True)
class CheckRow:
    """One indicator of a report.

    Attributes:
        indicator: its name (a key of :data:`INDICATORS`).
        value: what was measured (None when skipped).
        threshold: the value above which the status is ``warn`` or ``fail``.
        status: ``"pass"``, ``"warn"``, ``"fail"`` or ``"skip"`` (not applicable).
        fix: what to do when it is not ``pass`` (empty when it is).
        detail: how the value came about (counts, metrics), or why it was skipped.
    """

    indicator: str
    value: float | None
    threshold: float | None
    status: Status
    fix: str
    detail: str = ""


_ORDER = {"pass": 0, "skip": 0, "warn": 1, "fail": 2}


@dataclass
class EvaluationReport:
    """What :func:`check_evaluation` returns: one :class:`CheckRow` per indicator.

    Attributes:
        task: the task checked (``classification``, ``segmentation``, ``depth``,
            ``embedding``).
        samples: samples in the subset.
        attack: the checked attack (its repr).
        metric: the per-sample metric the damage is measured in.
        higher_is_better: its direction.
        clean: its mean on the clean subset.
        attacked: its mean under the checked attack.
        floor: its mean at the degenerate floor (another image shown to the model).
        rows: the indicators.
        attack_seconds: wall time of the checked attack on the subset.
        check_seconds: wall time of all checks (the checked attack included).
    """

    task: str
    samples: int
    attack: str
    metric: str
    higher_is_better: bool
    clean: float
    attacked: float
    floor: float
    rows: list[CheckRow] = field(default_factory=list)
    attack_seconds: float = 0.0
    check_seconds: float = 0.0

    @property
    def status(self) -> Status:
        """The worst status of the rows (``pass`` when none warned or failed)."""
        worst: Status = max((r.status for r in self.rows), key=_ORDER.__getitem__, default="pass")
        return "pass" if worst == "skip" else worst

    @property
    def failed(self) -> list[str]:
        """The indicators that failed."""
        return [r.indicator for r in self.rows if r.status == "fail"]

    @property
    def warned(self) -> list[str]:
        """The indicators that warned."""
        return [r.indicator for r in self.rows if r.status == "warn"]

    @property
    def cost(self) -> float:
        """Wall time of the checks relative to the checked attack alone."""
        return self.check_seconds / self.attack_seconds if self.attack_seconds > 0 else math.nan

    def row(self, indicator: str) -> CheckRow:
        """The row of ``indicator``."""
        for r in self.rows:
            if r.indicator == indicator:
                return r
        raise _checks.SSLRobustValueError(
            f"no indicator {indicator!r} in this report; it has {[r.indicator for r in self.rows]}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (NaN values as None)."""
        out = asdict(self)
        out.update(status=self.status, failed=self.failed, warned=self.warned, cost=self.cost)
        return _json_safe(out)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        """The report back from :meth:`to_dict` (None values read as NaN)."""
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["rows"] = [CheckRow(**row) for row in data.get("rows", [])]
        for key in ("clean", "attacked", "floor", "attack_seconds", "check_seconds"):
            if fields.get(key) is None:
                fields[key] = math.nan
        return cls(**fields)

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    def to_markdown(self) -> str:
        """The report as Markdown: a summary line and the indicator table."""
        arrow = "↑" if self.higher_is_better else "↓"
        head = (
            f"**Evaluation check: {self.status.upper()}** — {self.task}, {self.samples} samples, "
            f"`{self.attack}`\n\n"
            f"{self.metric} {arrow}: clean {self.clean:.4g}, attacked {self.attacked:.4g}, "
            f"floor {self.floor:.4g}; checks took {self.check_seconds:.1f} s "
            f"({self.cost:.1f}× the attack)\n\n"
            "| indicator | value | threshold | status | fix |\n|---|---|---|---|---|\n"
        )
        lines = []
        for r in self.rows:
            value = "–" if r.value is None else f"{r.value:.3g}"
            thr = "–" if r.threshold is None else f"{r.threshold:.3g}"
            fix = (
                r.fix if r.status in ("warn", "fail") else (r.detail if r.status == "skip" else "")
            )
            lines.append(f"| {r.indicator} | {value} | {thr} | {r.status} | {fix} |")
        return head + "\n".join(lines) + "\n"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
