"""ssl_robust: attack and defend self-supervised vision encoders across downstream tasks.

Images are always float tensors in [0, 1]; normalization lives inside the encoder, and attack
budgets are on the same [0, 1] scale (eps=8/255). The benchmark runner lives in
``ssl_robust.bench`` (imported on demand) and the command line in ``ssl-robust``.

>>> import ssl_robust
>>> from ssl_robust.attacks import PGD, EmbedAttack, SegPGD, DepthPGD
"""

from . import (
    adaptors,
    attacks,
    data,
    defenses,
    encoders,
    losses,
    metrics,
    registry,
    reliability,
    runtime,
    tasks,
)
from ._checks import (
    SSLRobustRuntimeError,
    SSLRobustTypeError,
    SSLRobustValueError,
    input_checks_enabled,
    set_input_checks,
)
from .adaptors import LinearClassifier, LinearDepther, LinearSegmenter, TaskModel, fit
from .attacks import (
    APGD,
    PGD,
    Attack,
    AttackResult,
    DepthPGD,
    EmbedAttack,
    Ensemble,
    SegPGD,
    Square,
    strong_attack,
)
from .data import create_dataset, list_datasets, register_dataset
from .defenses import DeACLConfig, DeACLTrainer
from .encoders import (
    Encoder,
    EncoderOutput,
    VisionTransformer,
    create_encoder,
    list_encoders,
    register_encoder,
    wrap,
)
from .evaluation import EvalResult, evaluate
from .metrics import Accuracy, DepthMetrics, MeanIoU
from .reliability import EvaluationReport, check_evaluation
from .tasks import TaskSpec, get_task, list_tasks, register_task

__version__ = "0.1.0.dev0"

__all__ = [
    "APGD",
    "PGD",
    "Accuracy",
    "Attack",
    "AttackResult",
    "DeACLConfig",
    "DeACLTrainer",
    "DepthMetrics",
    "DepthPGD",
    "EmbedAttack",
    "Encoder",
    "EncoderOutput",
    "Ensemble",
    "EvalResult",
    "EvaluationReport",
    "LinearClassifier",
    "LinearDepther",
    "LinearSegmenter",
    "MeanIoU",
    "SSLRobustRuntimeError",
    "SSLRobustTypeError",
    "SSLRobustValueError",
    "SegPGD",
    "Square",
    "TaskModel",
    "TaskSpec",
    "VisionTransformer",
    "__version__",
    "adaptors",
    "attacks",
    "check_evaluation",
    "create_dataset",
    "create_encoder",
    "data",
    "defenses",
    "encoders",
    "evaluate",
    "fit",
    "get_task",
    "input_checks_enabled",
    "list_datasets",
    "list_encoders",
    "list_tasks",
    "losses",
    "metrics",
    "register_dataset",
    "register_encoder",
    "register_task",
    "registry",
    "reliability",
    "runtime",
    "set_input_checks",
    "strong_attack",
    "tasks",
    "wrap",
]
