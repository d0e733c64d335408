"""``wrap(model)``: turn a ViT from timm, HF transformers, torchvision, torch.hub or any callable
into an :class:`Encoder` (images in [0, 1] in, CLS + patch tokens out, normalization inside).

The wrapped model becomes a submodule (its parameters are the encoder's); token outputs are
sliced views of the library's own output, never copies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from .base import IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderOutput

__all__ = ["WrappedEncoder", "wrap"]

Kind = Literal["timm", "hf", "torchvision", "dinov2_hub", "dino_hub", "callable"]
_MULTI_BLOCK_KINDS: tuple[Kind, ...] = ("timm", "hf", "dinov2_hub", "dino_hub")


def _require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is needed to build {extra} models; install it with "
            f"`pip install ssl-robust[{extra}]` (or `pip install {module}`)"
        ) from exc


def _as_int(value: object) -> int:
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise _checks.SSLRobustValueError(f"only square patches are supported; got {value}")
        value = value[0]
    return int(value)  # type: ignore[call-overload, no-any-return]


class WrappedEncoder(Encoder):
    """An :class:`Encoder` around a foreign model; built by :func:`wrap`.

    Args:
        model: the wrapped module or callable (called on normalized images).
        kind: how to read tokens out of it (chosen by :func:`wrap`).
        embed_dim: token width D.
        patch_size: patch side in pixels.
        num_prefix_tokens: leading non-patch tokens in a token sequence (CLS + registers).
        n_last_blocks: concatenate the CLS and patch tokens of the model's last n blocks along
            channels (DINOv2's "linear4" protocol; timm through ``forward_intermediates``, HF
            through ``output_hidden_states``, DINO / DINOv2 hub models through
            ``get_intermediate_layers``), each normed by the model's final norm. The encoder's
            ``embed_dim`` is then ``n_last_blocks * embed_dim``.
        pad: ``"refuse"`` sizes that are not multiples of the patch, or ``"pad"`` them
            (bottom/right, zeros after normalization) with ``F.pad``.
        mean: normalization mean.
        std: normalization std.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        kind: Kind,
        embed_dim: int,
        patch_size: int,
        num_prefix_tokens: int = 1,
        n_last_blocks: int = 1,
        pad: Literal["refuse", "pad"] = "refuse",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        n_last_blocks = _checks.check_int("n_last_blocks", n_last_blocks, minimum=1)
        token_dim = _checks.check_int("embed_dim", embed_dim, minimum=1)
        super().__init__(
            embed_dim=token_dim * n_last_blocks, patch_size=patch_size, mean=mean, std=std
        )
        if n_last_blocks > 1 and kind not in _MULTI_BLOCK_KINDS:
            raise _checks.SSLRobustValueError(
                f"n_last_blocks > 1 needs a model whose intermediate blocks ssl_robust can read "
                f"({', '.join(_MULTI_BLOCK_KINDS)}); got a {kind} model — use n_last_blocks=1"
            )
        self.token_dim = token_dim
        self.n_last_blocks = n_last_blocks
        self.kind = kind
        self.num_prefix_tokens = _checks.check_int("num_prefix_tokens", num_prefix_tokens)
        self.pad = _checks.check_choice("pad", pad, ("refuse", "pad"))
        if isinstance(model, nn.Module):
            self.model: Callable[..., Any] = model
        else:
            object.__setattr__(self, "model", model)  # a plain callable: not a submodule

    def _pad(self, x: Tensor) -> Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        if h % p or w % p:
            if self.pad == "refuse":
                raise _checks.SSLRobustValueError(
                    f"image height and width must be multiples of the patch size {p}; got "
                    f"{h}×{w} — resize or crop the images, or wrap with pad='pad'"
                )
            x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
        return x

    def _run_blocks(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(cls, patches) of the last ``n_last_blocks`` blocks, concatenated along channels."""
        m: Any = self.model
        n = self.n_last_blocks
        if self.kind == "timm":
            if not hasattr(m, "forward_intermediates"):
                raise _checks.SSLRobustValueError(
                    "n_last_blocks > 1 needs timm's forward_intermediates (timm >= 1.0); "
                    "upgrade timm or use n_last_blocks=1"
                )
            pairs = m.forward_intermediates(
                x,
                indices=n,
                norm=True,
                output_fmt="NLC",
                intermediates_only=True,
                return_prefix_tokens=True,
            )
            cls = [prefix[:, 0] for _, prefix in pairs]
            patches = [tokens for tokens, _ in pairs]
        elif self.kind == "hf":
            hidden = m(pixel_values=x, output_hidden_states=True, **self._hf_kwargs(x))
            layers = [m.layernorm(h) for h in hidden.hidden_states[-n:]]
            cls = [t[:, 0] for t in layers]
            patches = [t[:, self.num_prefix_tokens :] for t in layers]
        elif self.kind == "dinov2_hub":
            pairs = m.get_intermediate_layers(x, n=n, return_class_token=True, norm=True)
            cls = [c for _, c in pairs]
            patches = [p for p, _ in pairs]
        else:  # dino_hub: the tokens of the last n blocks, normed
            layers = m.get_intermediate_layers(x, n=n)
            cls = [t[:, 0] for t in layers]
            patches = [t[:, self.num_prefix_tokens :] for t in layers]
        return torch.cat(cls, dim=-1), torch.cat(patches, dim=-1)

    def _hf_kwargs(self, x: Tensor) -> dict[str, Any]:
        config = getattr(self.model, "config", None)
        if getattr(config, "model_type", "") != "vit":
            return {}
        size = getattr(config, "image_size", None)
        return {"interpolate_pos_encoding": tuple(x.shape[-2:]) != (size, size)}

    def _run(self, x: Tensor) -> Any:
        m = self.model
        if self.n_last_blocks > 1:
            return self._run_blocks(x)
        if self.kind == "timm":
            return m.forward_features(x)  # type: ignore[attr-defined]
        if self.kind == "hf":
            return m(pixel_values=x, **self._hf_kwargs(x)).last_hidden_state
        if self.kind == "torchvision":
            tokens = m._process_input(x)  # type: ignore[attr-defined]
            cls = m.class_token.expand(x.shape[0], -1, -1)  # type: ignore[attr-defined]
            return m.encoder(torch.cat((cls, tokens), dim=1))  # type: ignore[attr-defined]
        if self.kind == "dinov2_hub":
            return m.forward_features(x)  # type: ignore[attr-defined]
        if self.kind == "dino_hub":
            return m.get_intermediate_layers(x, n=1)[0]  # type: ignore[attr-defined]
        return m(x)

    def forward_features(self, x: Tensor) -> EncoderOutput:
        x = self._pad(x)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        out = self._run(x)
        if isinstance(out, EncoderOutput):
            return out
        if isinstance(out, dict):
            if "x_norm_clstoken" not in out or "x_norm_patchtokens" not in out:
                raise _checks.SSLRobustValueError(
                    "the model returned a dict without 'x_norm_clstoken' / 'x_norm_patchtokens'"
                    f"; got keys {sorted(out)}"
                )
            cls, patches = out["x_norm_clstoken"], out["x_norm_patchtokens"]
        elif isinstance(out, (tuple, list)) and len(out) == 2:
            cls, patches = out
        elif isinstance(out, Tensor) and out.ndim == 3:
            cls, patches = out[:, 0], out[:, self.num_prefix_tokens :]
        else:
            raise _checks.SSLRobustTypeError(
                "a wrapped callable must return tokens (B, prefix + N, D), a (cls, patches) "
                f"pair, a DINOv2 feature dict or an EncoderOutput; got {type(out).__name__}"
            )
        if patches.shape[1] != grid[0] * grid[1] or patches.shape[-1] != self.embed_dim:
            raise _checks.SSLRobustValueError(
                f"the wrapped model returned {patches.shape[1]} patch tokens of width "
                f"{patches.shape[-1]}; expected {grid[0]}×{grid[1]} = {grid[0] * grid[1]} of "
                f"width {self.embed_dim} — check patch_size, embed_dim and num_prefix_tokens"
            )
        return EncoderOutput(cls=cls, patches=patches, grid=grid)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, embed_dim={self.embed_dim}, patch_size={self.patch_size}, "
            f"n_last_blocks={self.n_last_blocks}"
        )


def _detect(model: object) -> tuple[Kind, dict[str, Any]]:
    """Which family ``model`` belongs to, and the facts read from it."""
    module = type(model).__module__
    name = type(model).__name__
    if module.startswith("timm.") and hasattr(model, "forward_features"):
        cfg = getattr(model, "pretrained_cfg", None) or {}
        facts: dict[str, Any] = dict(
            embed_dim=int(model.embed_dim),  # type: ignore[attr-defined]
            patch_size=_as_int(model.patch_embed.patch_size),  # type: ignore[attr-defined]
            num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 1)),
        )
        if getattr(model, "cls_token", None) is None:
            raise _checks.SSLRobustTypeError(
                f"timm model {name} has no CLS token; wrap a ViT built with class_token=True"
            )
        if "mean" in cfg and "std" in cfg:
            facts.update(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
        return "timm", facts
    if module.startswith("transformers.") and name in (
        "ViTModel",
        "Dinov2Model",
        "Dinov2WithRegistersModel",
    ):
        cfg = model.config  # type: ignore[attr-defined]
        regs = int(getattr(cfg, "num_register_tokens", 0) or 0)
        return "hf", dict(
            embed_dim=int(cfg.hidden_size),
            patch_size=_as_int(cfg.patch_size),
            num_prefix_tokens=1 + regs,
        )
    if module.startswith("torchvision.") and name == "VisionTransformer":
        return "torchvision", dict(
            embed_dim=int(model.hidden_dim),  # type: ignore[attr-defined]
            patch_size=int(model.patch_size),  # type: ignore[attr-defined]
        )
    if hasattr(model, "forward_features") and hasattr(model, "prepare_tokens_with_masks"):
        return "dinov2_hub", dict(
            embed_dim=int(model.embed_dim),  # type: ignore[attr-defined]
            patch_size=_as_int(model.patch_size),  # type: ignore[attr-defined]
        )
    if hasattr(model, "get_intermediate_layers") and hasattr(model, "prepare_tokens"):
        return "dino_hub", dict(
            embed_dim=int(model.embed_dim),  # type: ignore[attr-defined]
            patch_size=_as_int(model.patch_embed.patch_size),  # type: ignore[attr-defined]
        )
    if callable(model):
        return "callable", {
            k: getattr(model, k) for k in ("embed_dim", "patch_size") if hasattr(model, k)
        }
    raise _checks.SSLRobustTypeError(
        f"cannot wrap {type(model).__name__}: expected a timm VisionTransformer, an HF "
        "ViTModel / Dinov2Model / Dinov2WithRegistersModel, a torchvision VisionTransformer, a "
        "DINO / DINOv2 torch.hub model, or a callable with embed_dim and patch_size"
    )


def wrap(model: object, **kw: Any) -> Encoder:
    """One line from a foreign ViT to an ssl_robust :class:`Encoder`.

    Supported: timm ``VisionTransformer`` (tokens of ``forward_features``); HF ``ViTModel``,
    ``Dinov2Model``, ``Dinov2WithRegistersModel`` (``last_hidden_state``, registers skipped);
    torchvision ``VisionTransformer``; DINOv2 torch.hub models (``forward_features`` dict) and
    DINO v1 hub models (``get_intermediate_layers``); ``"timm:<name>"`` builds a timm model
    (``pretrained=`` forwarded); any callable taking normalized images and returning tokens
    (B, prefix + N, D), a (cls, patches) pair or a DINOv2-style dict, given ``embed_dim`` and
    ``patch_size`` (as attributes or keywords). An :class:`Encoder` is returned unchanged.

    Args:
        model: the model (or ``"timm:<name>"``).
        **kw: ``mean``, ``std`` (default: the model's own config where it has one, else
            ImageNet), ``pad`` (``"refuse"``/``"pad"``), ``embed_dim``, ``patch_size``,
            ``num_prefix_tokens`` (overrides), ``n_last_blocks`` (concatenate the last n
            blocks' tokens, see :class:`WrappedEncoder`), ``pretrained`` (``"timm:"`` only).

    Returns:
        The :class:`Encoder` (the model is a submodule; its train/eval mode is kept).

    Raises:
        SSLRobustTypeError: unsupported model or unknown keyword.
        ImportError: ``"timm:..."`` without timm installed (with the install hint).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> tokens = lambda x: torch.zeros(x.shape[0], 1 + (x.shape[-1] // 8) ** 2, 16)
        >>> enc = wrap(tokens, embed_dim=16, patch_size=8)
        >>> enc(torch.rand(2, 3, 16, 16)).patches.shape
        torch.Size([2, 4, 16])
    """
    allowed = (
        "mean",
        "std",
        "pad",
        "embed_dim",
        "patch_size",
        "num_prefix_tokens",
        "n_last_blocks",
        "pretrained",
    )
    _checks.check_no_unknown(
        {k: v for k, v in kw.items() if k not in allowed}, allowed, where="wrap()"
    )
    pretrained = bool(kw.pop("pretrained", False))
    if isinstance(model, str):
        prefix, _, name = model.partition(":")
        if prefix != "timm" or not name:
            raise _checks.SSLRobustValueError(
                f"wrap() got the string {model!r}; only 'timm:<model name>' is understood — "
                "for registered DINO models use create_encoder()"
            )
        timm = _require("timm", "timm")
        model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    elif pretrained:
        raise _checks.SSLRobustValueError("pretrained= applies only to wrap('timm:<name>')")
    if isinstance(model, Encoder):
        return model
    kind, facts = _detect(model)
    facts.update(kw)
    for key in ("embed_dim", "patch_size"):
        if key not in facts:
            raise _checks.SSLRobustTypeError(
                f"wrap() needs {key}= for a plain callable (it has no .{key} attribute)"
            )
    return WrappedEncoder(model, kind=kind, **facts)  # type: ignore[arg-type]
