"""Attacks on encoders and task models, all on one shared PGD core.

>>> from ssl_robust.attacks import PGD, EmbedAttack, SegPGD, DepthPGD
"""

from .base import Attack, AttackOptions
from .classification import APGD, PGD
from .core import L2, NORMS, AttackResult, Linf, Norm, pgd
from .depth import DepthPGD
from .embed import EmbedAttack, embedding_distance
from .segmentation import SegPGD

__all__ = [
    "APGD",
    "L2",
    "NORMS",
    "PGD",
    "Attack",
    "AttackOptions",
    "AttackResult",
    "DepthPGD",
    "EmbedAttack",
    "Linf",
    "Norm",
    "SegPGD",
    "embedding_distance",
    "pgd",
]
