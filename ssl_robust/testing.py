"""Contract checks for third parties: run them in your CI over what you register.

Each check is a fast smoke test (tiny model, a few images, CPU) of the contract the rest of
ssl_robust relies on, and raises :class:`ContractError` (a ``ValueError``) naming the broken
rule, what was expected and what came. ssl_robust's own built-ins pass through the same checks
in its test suite (as timm runs one contract test over its live registry).

- :func:`check_task`: a :class:`~ssl_robust.tasks.TaskSpec`: the head and its ``task``; the
  per-sample loss (shape, dtype, finite); gradients reach the images; batch-size consistency;
  the metric's declared direction agrees with its damage; the task attack stays in its
  budget and leaves the model as it was; the strong attack runs.
- :func:`check_encoder`: an :class:`~ssl_robust.encoders.Encoder`: output shapes and dtypes,
  ``embed_dim``, gradients reach the images, batch-size consistency, the input untouched.
- :func:`check_attack`: an :class:`~ssl_robust.attacks.Attack`: shape, dtype, budget and
  [0, 1]; per-sample result fields; state safety (mode, ``requires_grad``, parameter ``.grad``,
  parameters, global RNG, the input); determinism given a generator.

Example:
    >>> from ssl_robust.tasks import get_task
    >>> check_task(get_task("classification"))
    >>> from ssl_robust.encoders import create_encoder
    >>> check_encoder(create_encoder("vit_test"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from . import _checks
from .adaptors.base import Adaptor, TaskModel
from .attacks import Attack, Ensemble
from .data.base import DatasetInfo
from .encoders.base import Encoder, EncoderOutput
from .encoders.vit import VisionTransformer
from .tasks import TaskSpec, get_task

__all__ = ["ContractError", "check_attack", "check_encoder", "check_task"]


class ContractError(_checks.SSLRobustValueError):
    """A registered part breaks the contract the rest of ssl_robust relies on."""


def _fail(what: str, rule: str, detail: str) -> None:
    raise ContractError(f"{what}: {rule}; {detail}")


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.detach().clone() for b in model.buffers()],
        "rng": torch.get_rng_state(),
    }


def _same_state(what: str, model: nn.Module, before: dict[str, Any]) -> None:
    after = _snapshot(model)
    checks = (
        ("modes", "train/eval modes of the modules must be restored"),
        ("flags", "requires_grad flags must be restored"),
    )
    for key, rule in checks:
        if after[key] != before[key]:
            _fail(what, rule, f"before {before[key]}, after {after[key]}")
    if any(g is not None for g in after["grads"]) and all(g is None for g in before["grads"]):
        _fail(what, "parameter .grad must stay untouched", "gradients were written")
    for key, rule in (("params", "parameters"), ("buffers", "buffers (e.g. BatchNorm stats)")):
        for a, b in zip(before[key], after[key], strict=True):
            if not torch.equal(a, b):
                _fail(what, f"{rule} must be unchanged", "a value changed")
    if not torch.equal(before["rng"], after["rng"]):
        _fail(what, "the global RNG must be unchanged", "its state moved")


def _tiny_encoder(embed_dim: int, image_size: int) -> Encoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return VisionTransformer(
            img_size=image_size,
            patch_size=image_size // 4,
            embed_dim=embed_dim,
            depth=1,
            num_heads=2,
        ).eval()


def check_task(
    spec: TaskSpec | str,
    *,
    info: DatasetInfo | None = None,
    encoder: Encoder | None = None,
    batch: int = 3,
    image_size: int = 16,
    make_target: Callable[[Tensor, nn.Module], Tensor] | None = None,
) -> None:
    """Smoke-test the contract of a task (fast: a one-block ViT on 16×16 images).

    Args:
        spec: the task, or a registered name.
        info: dataset facts for the head and metric (default: 4 classes, 4 segmentation
            classes, depth in (1e-3, 10]).
        encoder: the encoder under the head (default: a one-block ViT, D=16).
        batch: images per check (>= 2).
        image_size: their size.
        make_target: ``(images, model) -> target`` (default: the model's own prediction,
            :attr:`~ssl_robust.tasks.TaskSpec.predicted`, on other random images; so a task
            whose targets are labels gives ``predicted``, e.g. ``out.argmax(1)``).

    Raises:
        ContractError: the first broken rule, with what was expected and what came.
    """
    spec = get_task(spec)
    what = f"task {spec.name!r}"
    info = info or DatasetInfo(
        name="check",
        tasks=(spec.name,),
        num_classes=4,
        seg_classes=4,
        min_depth=1e-3,
        max_depth=10.0,
    )
    enc = encoder if encoder is not None else _tiny_encoder(16, image_size)
    head = spec.make_head(enc.embed_dim, info)
    if not isinstance(head, Adaptor):
        _fail(what, "make_head must return an Adaptor", f"got {type(head).__name__}")
    if getattr(head, "task", None) != spec.name:
        _fail(
            what,
            "the head's task attribute must be the task's name",
            f"expected {spec.name!r}, got {getattr(head, 'task', None)!r}",
        )
    model = TaskModel(spec.encoder_view(enc), head).eval()
    gen = torch.Generator().manual_seed(0)
    device = next(iter(model.parameters()), torch.empty(0)).device
    images = torch.rand(batch, 3, image_size, image_size, generator=gen).to(device)
    other = torch.rand(batch, 3, image_size, image_size, generator=gen).to(device)
    with torch.no_grad():
        out = model(images)
        if make_target is not None:
            target = make_target(other, model)
        else:
            target = spec.predicted(model(other))
    target = spec.check_target(target, images, head, info.ignore_index)

    # per-sample loss, gradients to the images, batch consistency
    x = images.clone().requires_grad_(True)
    loss = spec.loss(model(x), target, info)
    if not isinstance(loss, Tensor) or tuple(loss.shape) != (batch,):
        got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        _fail(what, "loss must be per sample", f"expected shape ({batch},), got {got}")
    if not loss.is_floating_point() or not bool(torch.isfinite(loss).all()):
        _fail(what, "loss must be finite floats", f"got {loss.dtype} {loss.tolist()}")
    (grad,) = torch.autograd.grad(loss.sum(), x)
    if not bool(torch.isfinite(grad).all()) or float(grad.abs().sum()) == 0.0:
        _fail(
            what,
            "gradients of the loss must reach the images",
            "the gradient is zero or not finite",
        )
    with torch.no_grad():
        one = spec.loss(model(images[:1]), target[:1], info)
    if not torch.allclose(one, loss[:1].detach(), rtol=1e-3, atol=1e-8):
        _fail(
            what,
            "the loss of a sample must not depend on the batch",
            f"alone {one.tolist()}, in the batch {loss[:1].tolist()}",
        )

    # the metric's direction agrees with its damage
    metric = spec.make_metric(info)
    declared = getattr(metric, "higher_is_better", None)
    if declared is not None and bool(declared) != spec.higher_is_better:
        _fail(
            what,
            "higher_is_better must agree with the metric's own",
            f"the spec says {spec.higher_is_better}, {type(metric).__name__} says {declared}",
        )
    perfect = spec.check_target(spec.predicted(out), images, head, info.ignore_index)
    scores = []
    for tgt in (perfect, target):
        m = spec.make_metric(info)
        m.update(out, tgt)
        scores.append(spec.headline(m.compute()))
    dmg_perfect = spec.damage(out, perfect, info)
    dmg_other = spec.damage(out, target, info)
    if tuple(dmg_perfect.shape) != (batch,):
        _fail(
            what,
            "damage must be per sample",
            f"expected shape ({batch},), got {tuple(dmg_perfect.shape)}",
        )
    if scores[0] != scores[1]:
        better = scores[0] > scores[1] if spec.higher_is_better else scores[0] < scores[1]
        if not better:
            _fail(
                what,
                "the metric's declared direction contradicts it",
                f"higher_is_better={spec.higher_is_better}, but predicting the target "
                f"exactly scores {scores[0]:.4g} and a wrong target {scores[1]:.4g}",
            )
    if float(dmg_perfect.sum()) > float(dmg_other.sum()) + 1e-6:
        _fail(
            what,
            "damage must grow as the prediction gets worse",
            f"exact prediction {dmg_perfect.tolist()}, wrong {dmg_other.tolist()}",
        )

    # the task attack and the strong attack
    attack = spec.make_attack(model, info, steps=2, generator=torch.Generator().manual_seed(0))
    check_attack(attack, images, target)
    strong = spec.make_strong_attack(model, info, steps=1)
    if not isinstance(strong, Ensemble):
        _fail(what, "make_strong_attack must return an Ensemble", f"got {type(strong).__name__}")
    res = strong.run(images, target)
    if float((res.adversarial - images).abs().max()) > 8 / 255 + 1e-6:
        _fail(what, "the strong attack must stay within eps", "it left the 8/255 ball")


def check_encoder(
    encoder: nn.Module, *, image_size: int | None = None, batch: int = 2, atol: float = 1e-4
) -> None:
    """Smoke-test the encoder contract: images in [0, 1] → EncoderOutput.

    Args:
        encoder: the encoder (its modes are restored afterwards).
        image_size: the test images' size (default: the encoder's ``img_size``, else 32).
        batch: images per check (>= 2).
        atol: tolerance of the batch-consistency check.

    Raises:
        ContractError: the first broken rule, with what was expected and what came.
    """
    what = f"encoder {type(encoder).__name__}"
    if not isinstance(encoder, Encoder):
        _fail(what, "an encoder must be an ssl_robust Encoder", "wrap it with encoders.wrap")
    size = image_size or int(getattr(encoder, "img_size", 32))
    before = _snapshot(encoder)
    try:
        encoder.eval()
        gen = torch.Generator().manual_seed(0)
        first = next(iter(encoder.parameters()), torch.empty(0))
        images = torch.rand(batch, 3, size, size, generator=gen, dtype=first.dtype)
        images = images.to(first.device)
        kept = images.clone()
        x = images.clone().requires_grad_(True)
        out = encoder(x)
        if not isinstance(out, EncoderOutput):
            _fail(what, "forward must return an EncoderOutput", f"got {type(out).__name__}")
        d = int(getattr(encoder, "embed_dim", -1))
        h, w = out.grid
        if tuple(out.cls.shape) != (batch, d):
            _fail(
                what,
                "cls must be (B, embed_dim)",
                f"expected {(batch, d)}, got {tuple(out.cls.shape)}",
            )
        if tuple(out.patches.shape) != (batch, h * w, d):
            _fail(
                what,
                "patches must be (B, h·w, embed_dim) for grid (h, w)",
                f"expected {(batch, h * w, d)}, got {tuple(out.patches.shape)}",
            )
        if out.cls.dtype != images.dtype or out.patches.dtype != images.dtype:
            _fail(
                what,
                "outputs must keep the parameters' floating dtype",
                f"{images.dtype} in, {out.cls.dtype} out",
            )
        # a random projection: the plain sum of LayerNorm-ed tokens is constant (zero gradient)
        w_cls = torch.randn(out.cls.shape, generator=gen, dtype=out.cls.dtype)
        w_patch = torch.randn(out.patches.shape, generator=gen, dtype=out.patches.dtype)
        objective = (out.cls * w_cls.to(out.cls.device)).sum()
        objective = objective + (out.patches * w_patch.to(out.patches.device)).sum()
        (grad,) = torch.autograd.grad(objective, x)
        if not bool(torch.isfinite(grad).all()) or float(grad.abs().sum()) == 0.0:
            _fail(what, "gradients must reach the images", "zero or not finite")
        with torch.no_grad():
            one = encoder(images[:1])
        if not torch.allclose(one.cls, out.cls[:1].detach(), atol=atol):
            _fail(
                what,
                "a sample's embedding must not depend on the batch",
                f"max difference {float((one.cls - out.cls[:1]).abs().max()):.3g}",
            )
        if not torch.equal(images, kept):
            _fail(what, "the input images must not be modified", "they changed")
    finally:
        for m, mode in zip(encoder.modules(), before["modes"], strict=True):
            m.training = mode


def check_attack(
    attack: Attack, images: Tensor | None = None, target: Any = None, *, image_size: int = 16
) -> None:
    """Smoke-test the attack contract on ``images`` (default: random, for encoders and
    models that take 16×16 images) with ``target``.

    Raises:
        ContractError: the first broken rule, with what was expected and what came.
    """
    what = f"attack {type(attack).__name__}"
    if not isinstance(attack, Attack):
        _fail(what, "must be an ssl_robust Attack", f"got {type(attack).__name__}")
    model = _checks.unwrap_distributed(attack.model)
    modules = model if isinstance(model, nn.Module) else nn.Module()
    if images is None:
        device = next(iter(modules.parameters()), torch.empty(0)).device
        gen = torch.Generator().manual_seed(1)
        images = torch.rand(2, 3, image_size, image_size, generator=gen).to(device)
    kept = images.clone()
    before = _snapshot(modules)
    saved = attack.generator
    try:
        attack.generator = torch.Generator().manual_seed(0)
        res = attack.run(images, target)
        attack.generator = torch.Generator().manual_seed(0)
        again = attack.run(images, target)
    finally:
        attack.generator = saved
    _same_state(what, modules, before)
    if not torch.equal(images, kept):
        _fail(what, "the input images must not be modified", "they changed")
    adv = res.adversarial
    if adv.shape != images.shape or adv.dtype != images.dtype or adv.device != images.device:
        _fail(
            what,
            "adversarial images keep shape, dtype and device",
            f"{tuple(images.shape)} {images.dtype} in, {tuple(adv.shape)} {adv.dtype} out",
        )
    if float(adv.min()) < 0 or float(adv.max()) > 1:
        _fail(
            what,
            "adversarial images must be in [0, 1]",
            f"got [{float(adv.min()):.3g}, {float(adv.max()):.3g}]",
        )
    delta = (adv - images).flatten(1)
    size = delta.abs().amax(1) if attack.norm == "linf" else delta.norm(dim=1)
    if float(size.max()) > attack.eps * (1 + 1e-4) + 1e-6:
        _fail(
            what,
            f"the perturbation must be within eps={attack.eps:.4g} ({attack.norm})",
            f"got {float(size.max()):.4g}",
        )
    b = images.shape[0]
    if tuple(res.loss.shape) != (b,) or tuple(res.steps.shape) != (b,):
        _fail(
            what,
            "AttackResult.loss and .steps must be per sample",
            f"got {tuple(res.loss.shape)} and {tuple(res.steps.shape)}",
        )
    if res.success is not None and (
        tuple(res.success.shape) != (b,) or res.success.dtype != torch.bool
    ):
        _fail(
            what,
            "AttackResult.success must be (B,) bool or None",
            f"got {tuple(res.success.shape)} {res.success.dtype}",
        )
    if not torch.equal(res.adversarial, again.adversarial):
        _fail(what, "the same generator seed must give the same result", "two runs differ")
