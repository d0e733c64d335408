"""Attacks on encoders and task models, all on one shared PGD core.

>>> from ssl_robust.attacks import PGD, EmbedAttack
"""

from .base import Attack, AttackOptions
from .classification import PGD
from .core import L2, NORMS, AttackResult, Linf, Norm, pgd
from .embed import EmbedAttack, embedding_distance

__all__ = [
    "L2",
    "NORMS",
    "PGD",
    "Attack",
    "AttackOptions",
    "AttackResult",
    "EmbedAttack",
    "Linf",
    "Norm",
    "embedding_distance",
    "pgd",
]
