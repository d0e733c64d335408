"""ssl_robust: attack and defend self-supervised vision encoders across downstream tasks.

Images are always float tensors in [0, 1]; normalization lives inside the encoder, and attack
budgets are on the same [0, 1] scale (eps=8/255).

>>> import ssl_robust
>>> from ssl_robust.attacks import PGD, EmbedAttack
"""

from . import adaptors, attacks, encoders, metrics
from ._checks import SSLRobustTypeError, SSLRobustValueError
from .adaptors import LinearClassifier, TaskModel
from .attacks import PGD, Attack, AttackResult, EmbedAttack
from .encoders import Encoder, EncoderOutput, VisionTransformer
from .metrics import Accuracy

__version__ = "0.1.0.dev0"

__all__ = [
    "PGD",
    "Accuracy",
    "Attack",
    "AttackResult",
    "EmbedAttack",
    "Encoder",
    "EncoderOutput",
    "LinearClassifier",
    "SSLRobustTypeError",
    "SSLRobustValueError",
    "TaskModel",
    "VisionTransformer",
    "__version__",
    "adaptors",
    "attacks",
    "encoders",
    "metrics",
]
