"""Defenses: DeACL robust fine-tuning of encoders (paper §3.3; Zhang et al. 2022).

>>> from ssl_robust.defenses import DeACLConfig, DeACLTrainer
"""

from .augment import random_resized_crop_flip
from .config import DeACLConfig
from .deacl import DeACLTrainer, deacl_loss, warmup_cosine

__all__ = [
    "DeACLConfig",
    "DeACLTrainer",
    "deacl_loss",
    "random_resized_crop_flip",
    "warmup_cosine",
]
