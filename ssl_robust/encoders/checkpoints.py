"""Reading DINO / DINOv2 checkpoints: released state dicts and DINO training checkpoints.

Files are read with ``torch.load(weights_only=True)``; the only extra object allowed is the
``argparse.Namespace`` that DINO's training script stores under ``"args"``. Loading is strict:
every parameter of the model must be in the checkpoint with the same shape, and nothing else
may be left over (head keys of training checkpoints excepted). A mismatch raises a ValueError
that names the keys and shapes.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import _checks

__all__ = [
    "WeightsDownloadError",
    "download_state_dict",
    "extract_backbone_state_dict",
    "load_backbone_state_dict",
    "read_checkpoint",
]

# Wrappers under which training scripts keep the model weights, in order of preference: DINO
# saves the EMA "teacher" (the weights the paper evaluates) next to the "student".
_CONTAINER_KEYS = ("teacher", "model", "state_dict", "student")
_STRIP_PREFIXES = ("module.", "_orig_mod.")


class WeightsDownloadError(OSError):
    """The official weights could not be downloaded (offline, blocked, or bad URL)."""


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a checkpoint file and return the backbone's state dict.

    Accepts a released state dict (``{"cls_token": ..., "blocks.0.norm1.weight": ...}``) or a
    training checkpoint (``{"teacher": {"backbone.*": ..., "head.*": ...}, "student": ...,
    "args": Namespace, ...}``), see :func:`extract_backbone_state_dict`.

    Args:
        path: the checkpoint file.

    Returns:
        The backbone state dict (CPU tensors; floating tensors in float32).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        SSLRobustValueError: if the file is not a readable torch checkpoint or holds no state dict.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"checkpoint file not found: {str(file)!r} — pass the path of a DINO / DINOv2 "
            "checkpoint (.pth), e.g. checkpoint_path='dinov2_vits14_pretrain.pth'"
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" not in text:
            raise _checks.SSLRobustValueError(
                f"could not read checkpoint {str(file)!r}: the file is corrupt or not a torch "
                "checkpoint (unpickling failed)"
            ) from exc
        detail = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "")
        raise _checks.SSLRobustValueError(
            f"could not read checkpoint {str(file)!r} with torch.load(weights_only=True): "
            f"{detail} — only tensors, plain containers and argparse.Namespace are accepted; "
            "re-save the model's state_dict() with torch.save"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise _checks.SSLRobustValueError(
            f"could not read checkpoint {str(file)!r}: the file is corrupt or not a torch "
            f"checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    return extract_backbone_state_dict(obj, source=str(file))


def extract_backbone_state_dict(obj: object, *, source: str = "checkpoint") -> dict[str, Tensor]:
    """Find the backbone weights inside a loaded checkpoint object.

    Rules: descend into ``teacher`` (else ``model``, ``state_dict``, ``student``) when present;
    strip ``module.`` (DistributedDataParallel) and ``_orig_mod.`` (torch.compile); when keys
    start with ``backbone.``, keep only those, without the prefix (the ``head.*`` of DINO's
    multi-crop wrapper is dropped).

    Raises:
        SSLRobustValueError: if no mapping of tensors is found.
    """
    sd: Any = obj
    while isinstance(sd, Mapping) and not _is_tensor_mapping(sd):
        inner = next((k for k in _CONTAINER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            break
        sd = sd[inner]
    if not isinstance(sd, Mapping) or not sd or not _is_tensor_mapping(sd):
        keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise _checks.SSLRobustValueError(
            f"{source} holds no state dict of tensors; got {keys} — expected a released "
            "state dict or a training checkpoint with a 'teacher' / 'model' / 'state_dict' entry"
        )
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        k = str(key)
        for prefix in _STRIP_PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = value
    if any(k.startswith("backbone.") for k in out):
        out = {k[len("backbone.") :]: v for k, v in out.items() if k.startswith("backbone.")}
    return {k: (v.float() if v.is_floating_point() else v) for k, v in out.items()}


def _is_tensor_mapping(m: Mapping[Any, Any]) -> bool:
    return bool(m) and all(isinstance(v, Tensor) for v in m.values())


def load_backbone_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Strictly load ``state_dict`` into ``model``, assigning the tensors (no copy).

    Meant for a model whose parameters are not yet initialized (built on the ``meta`` device):
    the checkpoint tensors become the parameters.

    Raises:
        SSLRobustValueError: naming missing keys, unexpected keys and shape mismatches.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_preview(shapes)}")
        raise _checks.SSLRobustValueError(
            "checkpoint does not match the architecture: "
            + "; ".join(parts)
            + _hint(shapes, missing, unexpected)
        )
    model.load_state_dict(state_dict, strict=True, assign=True)


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")


def _hint(shapes: list[str], missing: list[str], unexpected: list[str]) -> str:
    if any(k == "register_tokens" for k in unexpected):
        return " — the checkpoint has register tokens: use the '_reg' encoder"
    if any(k == "register_tokens" for k in missing):
        return " — the checkpoint has no register tokens: use the encoder without '_reg'"
    if any(k.startswith("ls1.") or ".ls1." in k for k in unexpected):
        return " — the checkpoint has LayerScale (DINOv2): use a 'dinov2_*' encoder"
    if any(s.startswith("pos_embed") or s.startswith("patch_embed") for s in shapes):
        return " — patch size or training resolution differ: check the encoder name"
    return " — check that the encoder name matches the checkpoint's architecture"


def download_state_dict(url: str, *, name: str) -> dict[str, Tensor]:
    """Fetch official weights with torch.hub's state-dict download (cached under TORCH_HOME).

    Raises:
        WeightsDownloadError: when the download fails, with how to pass ``checkpoint_path=``
            instead.
    """
    try:
        obj = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, weights_only=True
        )
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, ...)
        filename = url.rsplit("/", 1)[-1]
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise WeightsDownloadError(
            f"could not download the official weights of {name!r} from {url} "
            f"({type(exc).__name__}: {reason}). Offline? Download the file elsewhere and pass "
            f"it: create_encoder({name!r}, checkpoint_path='/path/to/{filename}')"
        ) from exc
    return extract_backbone_state_dict(obj, source=url)
