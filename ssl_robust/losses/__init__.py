"""Per-sample losses of the attacks: DLR (classification), SegPGD and SEA (segmentation), depth.

Every loss returns one value per image, shape (B,), so it can drive an attack (which sums
nothing across samples) or be averaged for training.

>>> from ssl_robust.losses import segpgd_loss, depth_loss
"""

from .classification import dlr_loss, logit_margin, targeted_dlr_loss
from .depth import depth_loss, gradient_matching_loss, l1_log_loss, scale_invariant_log_loss
from .segmentation import SEGMENTATION_LOSSES, sea_loss, segpgd_loss

__all__ = [
    "SEGMENTATION_LOSSES",
    "depth_loss",
    "dlr_loss",
    "gradient_matching_loss",
    "l1_log_loss",
    "logit_margin",
    "scale_invariant_log_loss",
    "sea_loss",
    "segpgd_loss",
    "targeted_dlr_loss",
]
