"""Encoder registry: ``create_encoder(name, checkpoint_path=...)`` and ``list_encoders()``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import _checks
from ..registry import Registry
from .base import Encoder
from .checkpoints import download_state_dict, load_backbone_state_dict, read_checkpoint
from .hub import create_hub_encoder, is_hub_name
from .vit import VisionTransformer

__all__ = [
    "EncoderSpec",
    "bundled_weights_path",
    "create_encoder",
    "encoder_origin",
    "encoder_spec",
    "list_encoders",
    "register_encoder",
]


def bundled_weights_path(name: str) -> str:
    """Path of a weights file shipped in ``ssl_robust/assets``."""
    from importlib.resources import files

    path = files("ssl_robust") / "assets" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled weights {name!r} are missing from the installed package ({path}); "
            "reinstall ssl-robust or regenerate them with scripts/pretrain_default_encoder.py"
        )
    return str(path)


_DINO_URL = "https://dl.fbaipublicfiles.com/dino"
_DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2"


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder: the :class:`VisionTransformer` options and where its weights live,
    or the factory of another encoder family.

    Attributes:
        name: registry name.
        kwargs: keyword arguments of :class:`VisionTransformer` (or of ``factory``).
        url: official weights (``None`` for the small test/default models).
        description: one line for :func:`list_encoders` users and the docs.
        bundled: file name of weights shipped inside the package (``ssl_robust/assets``),
            loaded by ``pretrained=True`` without any download.
        factory: for an encoder family of another package:
            ``(*, checkpoint_path=None, pretrained=False, **kwargs) -> Encoder``, called by
            :func:`create_encoder` with ``kwargs`` updated by the caller's keywords.
    """

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    url: str | None = None
    description: str = ""
    bundled: str | None = None
    factory: Callable[..., Encoder] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _checks.SSLRobustValueError(
                f"EncoderSpec.name must be a non-empty string; got {self.name!r}"
            )
        if self.factory is not None and not callable(self.factory):
            raise _checks.SSLRobustTypeError(
                f"EncoderSpec {self.name!r}: factory must be callable; got "
                f"{type(self.factory).__name__}"
            )


_SIZES: dict[str, dict[str, Any]] = {
    "s": dict(embed_dim=384, depth=12, num_heads=6),
    "b": dict(embed_dim=768, depth=12, num_heads=12),
    "l": dict(embed_dim=1024, depth=24, num_heads=16),
}
_SIZE_NAMES = {"s": "small", "b": "base", "l": "large"}


_REGISTRY: Registry[EncoderSpec] = Registry(
    "encoder", entry_type=EncoderSpec, sort=True, choices="choose one of"
)


def register_encoder(
    spec: EncoderSpec | str,
    factory: Callable[..., Encoder] | None = None,
    *,
    description: str = "",
    overwrite: bool = False,
) -> EncoderSpec:
    """Register an encoder under its name, for :func:`create_encoder` and configs.

    Args:
        spec: an :class:`EncoderSpec`, or a name (then ``factory`` is required).
        factory: ``(*, checkpoint_path=None, pretrained=False, **kwargs) -> Encoder``.
        description: one line for ``ssl-robust list``.
        overwrite: replace an encoder of the same name registered by someone else.

    Returns:
        The registered :class:`EncoderSpec`.

    Raises:
        SSLRobustTypeError: neither an EncoderSpec nor a name with a factory.
        SSLRobustValueError: the name is taken (naming who registered it), unless
            ``overwrite=True``.

    Example:
        >>> from ssl_robust.encoders import VisionTransformer
        >>> spec = register_encoder(
        ...     "my_vit", lambda *, checkpoint_path=None, pretrained=False, **kw:
        ...     VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2))
        >>> create_encoder("my_vit").embed_dim, encoder_origin("my_vit")
        (16, 'built-in')
        >>> _ = _REGISTRY.unregister("my_vit")
    """
    if isinstance(spec, str):
        if factory is None:
            raise _checks.SSLRobustTypeError(
                f"register_encoder({spec!r}) needs a factory "
                "(*, checkpoint_path=None, pretrained=False, **kw) -> Encoder, or an EncoderSpec"
            )
        spec = EncoderSpec(spec, description=description, factory=factory)
    return _REGISTRY.add(spec, overwrite=overwrite)


def encoder_origin(name: str) -> str:
    """Where an encoder comes from: ``"built-in"``, a plugin's distribution, or a package."""
    return _REGISTRY.origin(name)


for _s, _file in (("s", "deitsmall"), ("b", "vitbase")):
    for _p in (16, 8):
        register_encoder(
            EncoderSpec(
                f"dino_vit{_s}{_p}",
                dict(img_size=224, patch_size=_p, **_SIZES[_s]),
                f"{_DINO_URL}/dino_{_file}{_p}_pretrain/dino_{_file}{_p}_pretrain.pth",
                f"DINO v1 ViT-{_s.upper()}/{_p} (ImageNet-1k)",
            )
        )
for _s in ("s", "b", "l"):
    for _reg in (False, True):
        _base = f"dinov2_vit{_s}14"
        _file = f"{_base}_reg4" if _reg else _base
        _interp: dict[str, Any] = (
            dict(num_register_tokens=4, interpolate_offset=0.0, interpolate_antialias=True)
            if _reg
            else {}
        )
        register_encoder(
            EncoderSpec(
                f"{_base}_reg" if _reg else _base,
                dict(
                    img_size=518,
                    patch_size=14,
                    layerscale=1.0,
                    mask_token=True,
                    **_SIZES[_s],
                    **_interp,
                ),
                f"{_DINOV2_URL}/{_base}/{_file}_pretrain.pth",
                f"DINOv2 ViT-{_s.upper()}/14{' with 4 registers' if _reg else ''} (LVD-142M)",
            )
        )
register_encoder(
    EncoderSpec(
        "vit_test",
        dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2),
        None,
        "2-block ViT for unit tests (16×16 images, 4×4 patches, D=32), random init",
    )
)
register_encoder(
    EncoderSpec(
        "vit_tiny",
        dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3),
        None,
        "4-block ViT for the embedded benchmark and examples (32×32, 4×4 patches, D=96)",
    )
)
register_encoder(
    EncoderSpec(
        "vit_tiny_shapes",
        dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3),
        None,
        "vit_tiny pretrained self-supervised on the synthetic shapes data (weights ship in "
        "the package; scripts/pretrain_default_encoder.py); the embedded benchmark's encoder",
        bundled="vit_tiny_shapes.pt",
    )
)

# create_encoder's short names for the output options of VisionTransformer.
_ALIASES = {"layer": "output_layer", "norm": "output_norm"}
_ARCH_KEYS = (
    "img_size",
    "patch_size",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "num_register_tokens",
    "layerscale",
    "mask_token",
    "interpolate_offset",
    "interpolate_antialias",
)
_OPTION_KEYS = (
    "layer",
    "norm",
    "output_layer",
    "output_norm",
    "n_last_blocks",
    "pad",
    "mean",
    "std",
)


def list_encoders() -> list[str]:
    """Names accepted by :func:`create_encoder`, sorted.

    Example:
        >>> "dinov2_vits14_reg" in list_encoders()
        True
    """
    return _REGISTRY.names()


def encoder_spec(name: str) -> EncoderSpec:
    """The :class:`EncoderSpec` registered under ``name``.

    Raises:
        SSLRobustValueError: for an unknown name, listing the choices.
    """
    if not isinstance(name, str):
        raise _checks.SSLRobustTypeError(f"an encoder name is a string; got {name!r}")
    return _REGISTRY.get(name)


def create_encoder(
    name: str,
    *,
    checkpoint_path: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    **kw: Any,
) -> Encoder:
    """Build an encoder by name, optionally with official or local weights.

    Names: one of :func:`list_encoders` (the built-in :class:`VisionTransformer`, DINO v1 /
    DINOv2 state-dict compatible); ``"timm/<timm model name>"`` (e.g.
    ``"timm/vit_small_patch14_dinov2.lvd142m"``) or ``"hf/<Hugging Face repo id>"`` (e.g.
    ``"hf/facebook/dinov2-small"``) to build that library's model when the ``timm`` /
    ``transformers`` extra is installed (see :func:`~ssl_robust.encoders.hub.create_hub_encoder`).
    All return the same :class:`Encoder` interface.

    Args:
        name: the encoder's name (see above).
        checkpoint_path: a checkpoint file: a released state dict, or a DINO training
            checkpoint (the ``teacher`` backbone is used, head keys ignored). Loaded strictly.
        pretrained: the official weights: bundled in the package, or downloaded (torch.hub
            for the registry, the Hugging Face Hub for timm / hf names; cached). Exclusive with
            ``checkpoint_path``.
        weights: deprecated name of ``checkpoint_path`` (a ``FutureWarning``).
        **kw: ``layer=`` (block whose tokens are returned, -1 = last), ``norm=`` (apply the final
            LayerNorm), ``n_last_blocks=`` (concatenate the last n blocks' tokens along
            channels, DINOv2's linear4 protocol; ``embed_dim`` becomes n·D), ``pad=``
            (``"refuse"`` or ``"pad"`` for sizes not divisible by the patch), ``mean=``/``std=``,
            or architecture options of :class:`VisionTransformer` (only without weights).

    Returns:
        The encoder, in eval mode.

    Raises:
        SSLRobustValueError: unknown name; a checkpoint and pretrained both given; pretrained
            for a model without official weights; a checkpoint that does not match the
            architecture.
        SSLRobustTypeError: unknown keyword arguments.
        FileNotFoundError: ``checkpoint_path`` does not exist.
        WeightsDownloadError: ``pretrained=True`` and the download failed.

    Example:
        >>> import torch
        >>> enc = create_encoder("vit_test", layer=0)
        >>> enc(torch.rand(1, 3, 16, 16)).patches.shape
        torch.Size([1, 16, 32])
        >>> create_encoder("vit_test", n_last_blocks=2).embed_dim  # 2 blocks × D=32
        64
    """
    if weights is not None:
        if checkpoint_path is not None:
            raise _checks.SSLRobustValueError(
                "pass checkpoint_path=PATH only (weights= is its deprecated name), not both"
            )
        warnings.warn(
            "create_encoder(weights=PATH) is deprecated and will be removed; use "
            "create_encoder(..., checkpoint_path=PATH)",
            FutureWarning,
            stacklevel=2,
        )
        checkpoint_path = weights
    if is_hub_name(name):
        return create_hub_encoder(
            name, pretrained=pretrained, checkpoint_path=checkpoint_path, **kw
        )
    spec = encoder_spec(name)
    if spec.factory is not None:
        made = spec.factory(
            checkpoint_path=checkpoint_path, pretrained=pretrained, **{**spec.kwargs, **kw}
        )
        if not isinstance(made, Encoder):
            raise _checks.SSLRobustTypeError(
                f"the factory of encoder {name!r} returned {type(made).__name__}, not an "
                "ssl_robust Encoder (wrap it with ssl_robust.encoders.wrap)"
            )
        return made.eval()
    unknown = {k: v for k, v in kw.items() if k not in _ARCH_KEYS + _OPTION_KEYS}
    _checks.check_no_unknown(unknown, _ARCH_KEYS + _OPTION_KEYS, where="create_encoder()")
    if checkpoint_path is not None and pretrained:
        raise _checks.SSLRobustValueError(
            "pass either checkpoint_path=PATH or pretrained=True, not both"
        )
    if pretrained and spec.url is None and spec.bundled is None:
        raise _checks.SSLRobustValueError(
            f"encoder {name!r} has no official weights; use pretrained=False or "
            "checkpoint_path=PATH"
        )
    options = dict(spec.kwargs)
    for key, value in kw.items():
        options[_ALIASES.get(key, key)] = value
    if checkpoint_path is None and not pretrained:
        return VisionTransformer(**options).eval()
    if checkpoint_path is not None:
        state_dict = read_checkpoint(checkpoint_path)
    elif spec.bundled is not None:
        state_dict = read_checkpoint(bundled_weights_path(spec.bundled))
    else:
        state_dict = download_state_dict(str(spec.url), name=name)
    # Build without initializing parameters (the checkpoint provides them), then assign.
    with torch.device("meta"):
        model = VisionTransformer(**options)
    load_backbone_state_dict(model, state_dict)
    return model.eval()
