"""Encoders from timm and Hugging Face by name: ``"timm/<model>"`` and ``"hf/<repo id>"``.

``create_encoder("timm/vit_small_patch14_dinov2.lvd142m")`` builds the timm model,
``create_encoder("hf/facebook/dinov2-small")`` the Hugging Face ``transformers`` model, and both
return the same :class:`~ssl_robust.encoders.Encoder` interface as the built-in ViT (through
:func:`~ssl_robust.encoders.wrap`). Random initialization works offline (timm's configs ship with
timm; the DINO / DINOv2 repositories of Hugging Face listed in :data:`HF_OFFLINE_CONFIGS` are
described here); ``pretrained=True`` downloads the weights from the Hugging Face Hub and fails
with :class:`~ssl_robust.encoders.WeightsDownloadError` when it cannot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from .. import _checks
from .base import Encoder
from .checkpoints import WeightsDownloadError
from .wrappers import _require, wrap

__all__ = ["HF_OFFLINE_CONFIGS", "HUB_PREFIXES", "create_hub_encoder", "is_hub_name"]

#: Name prefixes understood by ``create_encoder``: the library that builds the model.
HUB_PREFIXES: tuple[str, ...] = ("timm/", "hf/")

# Options that belong to the Encoder (wrap()), not to the foreign model's constructor.
_WRAP_KEYS = ("n_last_blocks", "pad", "mean", "std")

_DINOV2 = {
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "giant": (1536, 40, 24),
}


def _dinov2(size: str, registers: bool) -> dict[str, Any]:
    width, depth, heads = _DINOV2[size]
    cfg: dict[str, Any] = dict(
        model_type="dinov2_with_registers" if registers else "dinov2",
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        layerscale_value=1.0,
        layer_norm_eps=1e-6,
        use_swiglu_ffn=size == "giant",
    )
    if registers:
        cfg["num_register_tokens"] = 4
    return cfg


def _dino(size: str, patch: int) -> dict[str, Any]:
    width, heads = {"s": (384, 6), "b": (768, 12)}[size]
    return dict(
        model_type="vit",
        hidden_size=width,
        num_hidden_layers=12,
        num_attention_heads=heads,
        intermediate_size=4 * width,
        patch_size=patch,
        image_size=224,
        qkv_bias=True,
        layer_norm_eps=1e-12,
    )


#: Hugging Face repositories whose architecture is known offline (random init needs no download).
HF_OFFLINE_CONFIGS: Mapping[str, Mapping[str, Any]] = {
    **{f"facebook/dinov2-{s}": _dinov2(s, False) for s in _DINOV2},
    **{f"facebook/dinov2-with-registers-{s}": _dinov2(s, True) for s in _DINOV2},
    **{f"facebook/dino-vit{s}{p}": _dino(s, p) for s in "sb" for p in (16, 8)},
}


def is_hub_name(name: object) -> bool:
    """Whether ``name`` asks for a timm or Hugging Face model (``"timm/..."``, ``"hf/..."``)."""
    return isinstance(name, str) and name.startswith(HUB_PREFIXES)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def create_hub_encoder(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    **kw: Any,
) -> Encoder:
    """Build ``"timm/<model>"`` or ``"hf/<repo id>"`` and wrap it as an :class:`Encoder`.

    Args:
        name: ``"timm/<timm model name>"`` (e.g. ``"timm/vit_small_patch14_dinov2.lvd142m"``)
            or ``"hf/<Hugging Face repo id>"`` (e.g. ``"hf/facebook/dinov2-small"``).
        pretrained: download the published weights (Hugging Face Hub); random init otherwise.
        checkpoint_path: timm: a checkpoint file (``timm.create_model(checkpoint_path=)``);
            hf: a local folder written by ``save_pretrained``.
        **kw: ``n_last_blocks``, ``pad``, ``mean``, ``std`` for the encoder; timm only: other
            keywords go to ``timm.create_model`` (e.g. ``img_size=224``).

    Returns:
        The encoder, in eval mode.

    Raises:
        ImportError: timm / transformers is not installed (with the install hint).
        SSLRobustValueError: unknown model or repository; both pretrained and checkpoint_path.
        WeightsDownloadError: the weights could not be downloaded (one line, with what to do).

    Example:
        >>> import torch
        >>> enc = create_hub_encoder("timm/vit_small_patch14_dinov2.lvd142m", img_size=28)
        >>> out = enc(torch.rand(1, 3, 28, 28))
        >>> out.cls.shape, out.grid
        (torch.Size([1, 384]), (2, 2))
    """
    if pretrained and checkpoint_path is not None:
        raise _checks.SSLRobustValueError(
            "pass either checkpoint_path=PATH or pretrained=True, not both"
        )
    prefix, _, model_name = name.partition("/")
    if not model_name:
        raise _checks.SSLRobustValueError(
            f"{name!r} names no model; use 'timm/<timm model name>' or 'hf/<repo id>'"
        )
    wrap_kw = {k: kw.pop(k) for k in _WRAP_KEYS if k in kw}
    if prefix == "timm":
        model = _timm_model(model_name, pretrained, checkpoint_path, kw)
    else:
        _checks.check_no_unknown(kw, _WRAP_KEYS, where=f"create_encoder({name!r})")
        model = _hf_model(model_name, pretrained, checkpoint_path)
    return wrap(model, **wrap_kw).eval()


def _timm_model(
    name: str,
    pretrained: bool,
    checkpoint_path: str | os.PathLike[str] | None,
    kw: dict[str, Any],
) -> Any:
    timm = _require("timm", "timm")
    if not timm.is_model(name.split(".")[0]):
        raise _checks.SSLRobustValueError(
            f"timm has no model {name!r}; list them with timm.list_models('*dino*')"
        )
    path = "" if checkpoint_path is None else os.fspath(checkpoint_path)
    if path and not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    try:
        return timm.create_model(
            name, pretrained=pretrained, num_classes=0, checkpoint_path=path, **kw
        )
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise WeightsDownloadError(
            f"could not download the timm weights of {name!r} ({_first_line(exc)}); check the "
            "network, or use pretrained=False (random init) or checkpoint_path=FILE"
        ) from exc


_HF_CLASSES = {
    "vit": ("ViTConfig", "ViTModel"),
    "dinov2": ("Dinov2Config", "Dinov2Model"),
    "dinov2_with_registers": ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel"),
}


def _hf_model(repo: str, pretrained: bool, checkpoint_path: str | os.PathLike[str] | None) -> Any:
    transformers = _require("transformers", "transformers")
    source = repo if checkpoint_path is None else os.fspath(checkpoint_path)
    if checkpoint_path is not None and not os.path.isdir(source):
        raise FileNotFoundError(
            f"checkpoint folder not found: {source!r} (hf models load a folder written by "
            "save_pretrained)"
        )
    if pretrained or checkpoint_path is not None:
        try:
            config = transformers.AutoConfig.from_pretrained(source)
            model_cls = _hf_class(transformers, config.model_type, repo)
            extra = {"add_pooling_layer": False} if config.model_type == "vit" else {}
            return model_cls.from_pretrained(source, **extra)
        except OSError as exc:
            if checkpoint_path is not None:
                raise
            raise WeightsDownloadError(
                f"could not download {repo!r} from the Hugging Face Hub ({_first_line(exc)}); "
                "check the network, or use pretrained=False (random init) or "
                "checkpoint_path=FOLDER"
            ) from exc
    if repo not in HF_OFFLINE_CONFIGS:
        raise _checks.SSLRobustValueError(
            f"no offline architecture for Hugging Face repo {repo!r}; random init is available "
            f"for: {', '.join(sorted(HF_OFFLINE_CONFIGS))} — or pass pretrained=True"
        )
    options = dict(HF_OFFLINE_CONFIGS[repo])
    model_type = options.pop("model_type")
    config_name, _ = _HF_CLASSES[model_type]
    config = getattr(transformers, config_name)(**options)
    model_cls = _hf_class(transformers, model_type, repo)
    extra = {"add_pooling_layer": False} if model_type == "vit" else {}
    return model_cls(config, **extra)


def _hf_class(transformers: ModuleType, model_type: str, repo: str) -> Any:
    if model_type not in _HF_CLASSES:
        raise _checks.SSLRobustValueError(
            f"Hugging Face repo {repo!r} holds a {model_type!r} model; supported model types: "
            f"{', '.join(_HF_CLASSES)}"
        )
    return getattr(transformers, _HF_CLASSES[model_type][1])
