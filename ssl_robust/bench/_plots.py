"""Benchmark figures (PNG) drawn with matplotlib's object API (no pyplot, no global backend)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import SSLRobustValueError
from ._schema import encoder_type_label, ordered_tasks, task_info, validate_results

__all__ = ["load_matplotlib", "write_figures"]

_DPI = 120
_IGNORE = 255
_BUILT_IN_KINDS = ("label", "mask", "depth")
_GALLERY_KEYS = (
    "images",
    "embed_adv",
    "task_adv",
    "target",
    "pred_clean",
    "pred_embed",
    "pred_task",
)
_HISTORY_PANELS = (
    ("(a) accuracy", ("clean_accuracy", "embed_accuracy")),
    ("(b) embedding similarity", ("clean_alignment", "embed_cosine")),
)


def load_matplotlib() -> tuple[Any, Any, Any]:
    """Import matplotlib lazily; return ``(Figure, FigureCanvasAgg, colormaps)``.

    Raises:
        ModuleNotFoundError: with an install hint when matplotlib is missing.
    """
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ModuleNotFoundError(
            "figures need matplotlib: pip install 'ssl-robust[bench]'"
        ) from err
    return Figure, FigureCanvasAgg, colormaps


def _new_figure(figsize: tuple[float, float]) -> Any:
    Figure, FigureCanvasAgg, _ = load_matplotlib()
    fig = Figure(figsize=figsize, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _float(value: object) -> float:
    return float("nan") if value is None else float(value)  # type: ignore[arg-type]


def _eps_curves(task: str, curves: Sequence[Mapping[str, Any]], path: Path) -> Path:
    info = task_info(task)
    fig = _new_figure((6.4, 4.0))
    ax = fig.add_subplot()
    _, _, colormaps = load_matplotlib()
    palette = colormaps["tab10"]
    keys = sorted({(c["dataset"], c["encoder"], c["encoder_type"]) for c in curves})
    for curve in sorted(curves, key=lambda c: (c["dataset"], c["encoder"], c["attack"])):
        key = (curve["dataset"], curve["encoder"], curve["encoder_type"])
        order = np.argsort(np.asarray(curve["eps"], dtype=float), kind="stable")
        eps = np.asarray(curve["eps"], dtype=float)[order] * 255.0
        values = np.asarray([_float(v) for v in curve["values"]], dtype=float)[order]
        attack = info.attack_label if curve["attack"] == "task_attack" else "EmbedAttack"
        ax.plot(
            eps,
            values,
            linestyle="-" if curve["attack"] == "task_attack" else "--",
            marker="o" if curve["attack"] == "task_attack" else "s",
            markersize=4,
            color=palette(keys.index(key) % 10),
            label=f"{key[0]} · {key[1]} ({encoder_type_label(key[2])}) · {attack}",
        )
    ax.set_xlabel("ε (×1/255)")
    ax.set_ylabel(f"{info.metric_label} {info.arrow}")
    ax.set_title(
        f"{task}: {info.metric_label} under attack (solid {info.attack_label}, dashed EmbedAttack)"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), handlelength=3)
    return _save(fig, path)


def _deacl_history(history: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    panels = [
        (title, [k for k in keys if any(k in r for r in history)])
        for title, keys in _HISTORY_PANELS
    ]
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        return None
    fig = _new_figure((5.0 * len(panels), 3.6))
    _, _, colormaps = load_matplotlib()
    from matplotlib.ticker import MaxNLocator

    palette = colormaps["tab10"]
    encoders = sorted({r["encoder"] for r in history})
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for e, encoder in enumerate(encoders):
            recs = sorted((r for r in history if r["encoder"] == encoder), key=lambda r: r["epoch"])
            for k, key in enumerate(keys):
                pts = [(r["epoch"], _float(r.get(key))) for r in recs if key in r]
                if not pts:
                    continue
                x, y = zip(*pts, strict=True)
                ax.plot(
                    x,
                    y,
                    linestyle="-" if k == 0 else "--",
                    marker="o",
                    markersize=3,
                    color=palette(e % 10),
                    label=f"{encoder}: {key}",
                )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, handlelength=3)
    fig.suptitle("DeACL fine-tuning")
    return _save(fig, path)


def _load_gallery(path: Path, task: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"gallery file {str(path)!r} named in results.json is missing")
    data = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(data, Mapping):
        raise SSLRobustValueError(f"gallery {path} must hold a dict; got {type(data).__name__}")
    for key in _GALLERY_KEYS:
        if not isinstance(data.get(key), torch.Tensor):
            raise SSLRobustValueError(
                f"gallery {path} is missing the tensor {key!r}; expected keys: "
                f"{', '.join(_GALLERY_KEYS)}"
            )
    n = data["images"].shape[0]
    img_shape = tuple(data["images"].shape)
    for key in ("embed_adv", "task_adv"):
        if tuple(data[key].shape) != img_shape or len(img_shape) != 4 or img_shape[1] != 3:
            raise SSLRobustValueError(
                f"gallery {path}: 'images' and {key!r} must both have shape (n, 3, H, W); got "
                f"{img_shape} and {tuple(data[key].shape)}"
            )
    info = task_info(task)
    want = (n, *img_shape[2:]) if info.dense else (n,)
    for key in ("target", "pred_clean", "pred_embed", "pred_task"):
        shape = tuple(data[key].shape)
        if info.target_key not in _BUILT_IN_KINDS:  # a registered task: (n, ..., H, W) or (n, ...)
            ok = shape[:1] == (n,) and (not info.dense or shape[-2:] == tuple(img_shape[2:]))
            want = (n, "...", *img_shape[2:]) if info.dense else (n, "...")  # type: ignore[assignment]
        else:
            ok = shape == want
        if not ok:
            raise SSLRobustValueError(
                f"gallery {path} ({task}): {key!r} must have shape {want}; got "
                f"{tuple(data[key].shape)}"
            )
    return {k: data[k].detach().cpu() for k in _GALLERY_KEYS}


def _scalar(value: torch.Tensor) -> str:
    """A label as text: an integer class, else the first value of a registered task's target."""
    flat = value.flatten()
    if not value.is_floating_point() and flat.numel() == 1:
        return str(int(flat[0]))
    return f"{float(flat[0]):.2f}" if flat.numel() else "–"


def _hwc(images: torch.Tensor) -> np.ndarray:
    out: np.ndarray = images.float().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return out


def _amplified(delta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    d = delta.float()
    peak = d.abs().flatten(1).amax(1)
    scaled = 0.5 + d / (2 * peak.clamp_min(1e-12)).view(-1, 1, 1, 1)
    return _hwc(scaled), peak.numpy()


def _mask_rgb(mask: torch.Tensor, palette: np.ndarray) -> np.ndarray:
    m = mask.long().numpy()
    rgb: np.ndarray = palette[np.mod(m, len(palette))]
    rgb[m == _IGNORE] = 0.0
    return rgb


def _depth_range(data: Mapping[str, torch.Tensor]) -> tuple[float, float]:
    keys = ("target", "pred_clean", "pred_embed", "pred_task")
    stack = torch.cat([data[k].flatten().float() for k in keys])
    stack = stack[torch.isfinite(stack) & (stack > 0)]
    return (float(stack.min()), float(stack.max())) if stack.numel() else (0.0, 1.0)


def _gallery(entry: Mapping[str, Any], data: dict[str, torch.Tensor], path: Path) -> Path:
    task = entry["task"]
    info = task_info(task)
    _, _, colormaps = load_matplotlib()
    # tab20 comes in light/dark pairs: take the dark ones first so that classes 0–9 differ
    tab20 = np.asarray(colormaps["tab20"].colors, dtype=float)[:, :3]
    palette = np.concatenate([tab20[0::2], tab20[1::2]])
    kind = info.target_key  # how targets and predictions are drawn: label, mask or depth
    lo, hi = _depth_range(data) if kind == "depth" else (0.0, 1.0)
    cls = not info.dense
    # (title, images shown under the prediction, prediction key) per prediction column
    runs = [
        ("clean", data["images"], "pred_clean"),
        ("EmbedAttack", data["embed_adv"], "pred_embed"),
        (info.attack_label, data["task_adv"], "pred_task"),
    ]
    deltas = [
        ("EmbedAttack δ", _amplified(data["embed_adv"] - data["images"])),
        (f"{info.attack_label} δ", _amplified(data["task_adv"] - data["images"])),
    ]
    columns = ["image", *(t for t, _ in deltas), *(t for t, _, _ in runs)]
    columns += [] if cls else ["target"]
    n, ncol = data["images"].shape[0], len(columns)
    fig = _new_figure((1.6 * ncol + (0.8 if kind == "depth" else 0.0), 1.7 * n + 0.6))
    axes = [[fig.add_subplot(n, ncol, r * ncol + c + 1) for c in range(ncol)] for r in range(n)]
    depth_im = None

    def show_dense(ax: Any, value: torch.Tensor) -> None:
        nonlocal depth_im
        if kind == "mask":
            ax.imshow(_mask_rgb(value, palette), interpolation="nearest")
        elif kind not in _BUILT_IN_KINDS:  # a registered task: 3 channels as RGB, else a map
            v = value.float()
            if v.ndim == 3 and v.shape[0] == 3:
                ax.imshow((0.5 + 0.5 * v).clamp(0, 1).permute(1, 2, 0).numpy())
            else:
                ax.imshow(v.reshape(-1, *v.shape[-2:])[0].numpy(), cmap="viridis")
        else:
            arr = value.float().numpy()
            depth_im = ax.imshow(arr, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")

    for r, row in enumerate(axes):
        label = _scalar(data["target"][r]) if cls else None
        row[0].imshow(_hwc(data["images"][r : r + 1])[0], interpolation="nearest")
        if cls:
            row[0].set_xlabel(f"label {label}", fontsize=7)
        for ax, (_, (amp, peak)) in zip(row[1:3], deltas, strict=True):
            ax.imshow(amp[r], interpolation="nearest")
            ax.set_xlabel(f"max|δ|={peak[r] * 255:.1f}/255", fontsize=6)
        for ax, (_, shown, key) in zip(row[3:6], runs, strict=True):
            pred = data[key][r]
            if cls:
                ax.imshow(_hwc(shown[r : r + 1])[0], interpolation="nearest")
                color = "green" if _scalar(pred) == label else "red"
                ax.set_xlabel(f"pred {_scalar(pred)}", fontsize=7, color=color)
            else:
                show_dense(ax, pred)
        if not cls:
            show_dense(row[6], data["target"][r])
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], columns, strict=True):
        ax.set_title(name, fontsize=8)
    if depth_im is not None:
        fig.colorbar(depth_im, ax=[ax for row in axes for ax in row], shrink=0.8, label="depth (m)")
    fig.suptitle(
        f"{entry['dataset']} · {task} · {entry['encoder']} "
        f"({encoder_type_label(entry['encoder_type'])})",
        fontsize=9,
    )
    return _save(fig, path)


def write_figures(results: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Draw the benchmark figures as PNG files under ``out_dir/figures/``.

    * ``eps_curves_<task>.png`` — the task metric against ε (in units of 1/255), one line per
      dataset × encoder × encoder type × attack (solid: task attack, dashed: EmbedAttack).
    * ``deacl_history.png`` — Fig. 2 of the paper: per DeACL encoder and epoch, (a) clean and
      EmbedAttack accuracy, (b) clean alignment and adversarial embedding cosine.
    * ``gallery_<dataset>_<task>_<encoder>.png`` — per gallery file, one row per sample:
      image, amplified EmbedAttack and task-attack perturbations (0.5 + δ / (2·max|δ|)),
      predictions clean / under EmbedAttack / under the task attack, and the target (masks
      in a fixed categorical palette with ignored pixels black; depth with one shared colour
      scale). For classification the predicted labels are written under the images.

    Sections absent from ``results`` produce no figure.

    Args:
        results: a results dict following the ``results.json`` contract.
        out_dir: the benchmark output directory; gallery files are read relative to it.

    Returns:
        The paths of the written PNG files.

    Raises:
        ModuleNotFoundError: if matplotlib is not installed.
        FileNotFoundError: if a gallery file is missing.
        SSLRobustValueError: if ``results`` or a gallery file breaks the contract.

    Example:
        >>> import tempfile
        >>> curve = {"task": "classification", "dataset": "shapes", "encoder": "vit",
        ...          "encoder_type": "standard", "metric": "accuracy", "attack": "task_attack",
        ...          "eps": [0.0, 4 / 255, 8 / 255], "values": [0.9, 0.4, 0.1]}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     print([p.name for p in write_figures({"rows": [], "curves": [curve]}, d)])
        ['eps_curves_classification.png']
    """
    validate_results(results)
    load_matplotlib()
    out = Path(out_dir)
    fig_dir = out / "figures"
    written: list[Path] = []
    curves = results.get("curves") or []
    for task in ordered_tasks({c["task"] for c in curves}):
        subset = [c for c in curves if c["task"] == task]
        if subset:
            written.append(_eps_curves(task, subset, fig_dir / f"eps_curves_{task}.png"))
    history = results.get("deacl_history") or []
    if history:
        path = _deacl_history(history, fig_dir / "deacl_history.png")
        if path is not None:
            written.append(path)
    used: set[str] = set()
    for entry in results.get("galleries") or []:
        data = _load_gallery(out / entry["file"], entry["task"])
        name = "_".join(_slug(entry[k]) for k in ("dataset", "task", "encoder"))
        if name in used:
            name += f"_{_slug(entry['encoder_type'])}"
        stem, i = name, 2
        while name in used:
            name, i = f"{stem}_{i}", i + 1
        used.add(name)
        written.append(_gallery(entry, data, fig_dir / f"gallery_{name}.png"))
    return written
