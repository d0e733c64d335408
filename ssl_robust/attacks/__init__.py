"""Attacks on encoders and task models, all on one shared PGD core.

>>> from ssl_robust.attacks import PGD, EmbedAttack, SegPGD, DepthPGD
"""

from .base import Attack, AttackOptions
from .classification import APGD, PGD
from .core import L2, NORMS, AttackResult, Linf, Norm, SeededStart, pgd
from .depth import DepthPGD
from .embed import EmbedAttack, embedding_distance
from .ensemble import STRONG_TASKS, STRONG_VERSIONS, Ensemble, EnsembleResult, strong_attack
from .segmentation import SegPGD
from .square import Square, p_schedule, square

__all__ = [
    "APGD",
    "L2",
    "NORMS",
    "PGD",
    "STRONG_TASKS",
    "STRONG_VERSIONS",
    "Attack",
    "AttackOptions",
    "AttackResult",
    "DepthPGD",
    "EmbedAttack",
    "Ensemble",
    "EnsembleResult",
    "Linf",
    "Norm",
    "SeededStart",
    "SegPGD",
    "Square",
    "embedding_distance",
    "p_schedule",
    "pgd",
    "square",
    "strong_attack",
]
