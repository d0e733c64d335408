"""Defenses: robust fine-tuning of encoders on one loop with pluggable objectives.

:class:`RobustTrainer` runs any list of objectives — :class:`DeACL` (paper §3.3; Zhang et al.
2022), :class:`FARE` (Schlarmann et al. 2024) and task-aware adversarial training
(:class:`TaskAT`) — combined as ``avg``, ``max`` or ``random`` (Tramèr & Boneh 2019).
:class:`DeACLTrainer` is its DeACL preset.

>>> from ssl_robust.defenses import DeACLConfig, DeACLTrainer, FARE, RobustTrainer, TaskAT
"""

from .augment import augment_with_targets, random_resized_crop_flip
from .combine import COMBINES, combine_losses
from .config import DeACLConfig, RobustConfig
from .deacl import DeACLTrainer
from .objectives import FARE, DeACL, Objective, deacl_loss, fare_distance
from .recipes import DEFENSE_METHODS, FinetuneSpec, make_trainer
from .robust import OBJECTIVES, RobustTrainer
from .schedule import warmup_cosine
from .task_at import TaskAT

__all__ = [
    "COMBINES",
    "DEFENSE_METHODS",
    "FARE",
    "OBJECTIVES",
    "DeACL",
    "DeACLConfig",
    "DeACLTrainer",
    "FinetuneSpec",
    "Objective",
    "RobustConfig",
    "RobustTrainer",
    "TaskAT",
    "augment_with_targets",
    "combine_losses",
    "deacl_loss",
    "fare_distance",
    "make_trainer",
    "random_resized_crop_flip",
    "warmup_cosine",
]
