"""Every attack in every context a user calls it from (no_grad, autocast, fp16/bf16 images,
compiled and wrapped models, Hugging Face-style outputs, plain functions)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from _helpers_dense import fitted_depther, fitted_segmenter, scenes
from conftest import tiny_vit
from torch import nn

import ssl_robust
from ssl_robust import _checks
from ssl_robust.adaptors import LinearClassifier, TaskModel, fit
from ssl_robust.attacks import PGD, DepthPGD, EmbedAttack, SegPGD, pgd
from ssl_robust.defenses import DeACLConfig, DeACLTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 8 / 255
ATTACKS = ["pgd", "embed-cls", "embed-patch", "segpgd", "depthpgd", "functional"]


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _classifier() -> TaskModel:
    enc = tiny_vit().eval()
    torch.manual_seed(1)
    head = LinearClassifier(32, 5)
    nn.init.normal_(head.linear.weight, std=1.0)
    return TaskModel(enc, head).eval()


def _setup(kind: str) -> tuple[nn.Module, Callable[..., Any], torch.Tensor, Any]:
    """(model under attack, attack factory taking the model, images, target)."""
    images, masks, depth = scenes(4, seed=5)
    if kind == "segpgd":
        return (
            copy.deepcopy(fitted_segmenter()),
            lambda m, **kw: SegPGD(m, steps=4, generator=_gen(), **kw),
            images,
            masks,
        )
    if kind == "depthpgd":
        return (
            copy.deepcopy(fitted_depther()),
            lambda m, **kw: DepthPGD(m, steps=4, max_depth=8.0, generator=_gen(), **kw),
            images,
            depth,
        )
    model = _classifier()
    labels = torch.tensor([0, 1, 2, 3])
    if kind == "pgd":
        return model, lambda m, **kw: PGD(m, steps=4, generator=_gen(), **kw), images, labels
    if kind.startswith("embed"):
        tokens = kind.split("-")[1]
        return (
            model.encoder,
            lambda m, **kw: EmbedAttack(m, tokens=tokens, steps=4, generator=_gen(), **kw),
            images,
            None,
        )

    class _Functional:  # the functional core, called the way a user would
        def __init__(self, m: nn.Module) -> None:
            self.m = m

        def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            def loss_fn(xa: torch.Tensor, idx: torch.Tensor, step: int) -> Any:
                logits = self.m(xa).float()
                return F.cross_entropy(logits, y[idx], reduction="none"), None

            return pgd(
                loss_fn, x, eps=EPS, step_size=2 / 255, steps=4, generator=_gen()
            ).adversarial

    return model, lambda m, **kw: _Functional(m), images, labels


def _assert_in_ball(adv: torch.Tensor, images: torch.Tensor) -> None:
    """Inside the eps-ball and [0, 1] exactly, in the returned dtype (checked in float64)."""
    assert adv.dtype == images.dtype and adv.shape == images.shape
    d = adv.double() - images.double()
    assert d.abs().max() <= EPS, float(d.abs().max() * 255)
    assert adv.min() >= 0 and adv.max() <= 1


# ---------------------------------------------------------------------------- no_grad
@pytest.mark.parametrize("kind", ATTACKS)
def test_no_grad_gives_exactly_the_plain_result(kind: str) -> None:
    model, make, images, target = _setup(kind)
    plain = make(model)(images, target)
    with torch.no_grad():
        inside = make(model)(images, target)
    assert torch.equal(plain, inside)
    assert (plain - images).abs().max() > EPS / 2  # the attack moved (not only the start)
    _assert_in_ball(plain, images)


@pytest.mark.parametrize("kind", ["pgd", "embed-cls", "segpgd"])
def test_inference_mode_is_a_clear_error(kind: str) -> None:
    model, make, images, target = _setup(kind)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        make(model)(images, target)


def test_no_grad_regression_moves_without_random_start() -> None:
    """The first version returned the clean images under no_grad (max |δ| = 0)."""
    model, _, images, labels = _setup("pgd")
    attack = PGD(model, steps=5, random_start=False, select="last")
    with torch.no_grad():
        adv = attack(images, labels)
    assert (adv - images).abs().max() > 0.5 * EPS


def test_deacl_attack_under_no_grad_equals_plain() -> None:
    enc = tiny_vit().eval()
    images = torch.rand(4, 3, 16, 16, generator=_gen())
    cfg = DeACLConfig(epochs=1, warmup_epochs=0, steps=3, seed=3)
    plain = DeACLTrainer(copy.deepcopy(enc), config=cfg).attack(images)
    with torch.no_grad():
        inside = DeACLTrainer(copy.deepcopy(enc), config=cfg).attack(images)
    assert torch.equal(plain, inside)
    assert not torch.equal(plain, images)


# ------------------------------------------------------------------- precision
@pytest.mark.parametrize("kind", ATTACKS)
def test_autocast_bf16(kind: str) -> None:
    model, make, images, target = _setup(kind)
    attack = make(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = attack.run(images, target) if hasattr(attack, "run") else None
        adv = res.adversarial if res is not None else attack(images, target)
    _assert_in_ball(adv, images)
    assert adv.dtype == torch.float32
    assert not torch.equal(adv, images)
    if res is not None:
        assert res.loss.dtype == torch.float32 and torch.isfinite(res.loss).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ATTACKS)
def test_low_precision_images_stay_in_the_ball_in_their_dtype(
    kind: str, dtype: torch.dtype
) -> None:
    model, make, images, target = _setup(kind)
    model = model.to(dtype)
    x = images.to(dtype)
    attack = make(model)
    adv = attack(x, target)
    _assert_in_ball(adv, x)
    assert not torch.equal(adv, x)


def test_low_precision_regression_no_overshoot_of_eps() -> None:
    """The first version returned max |δ| = 8.03/255 (fp16) and 8.47/255 (bf16)."""
    model, _, images, labels = _setup("pgd")
    for dtype in (torch.float16, torch.bfloat16):
        x = images.to(dtype)
        res = PGD(model.to(dtype), steps=6, generator=_gen()).run(x, labels)
        _assert_in_ball(res.adversarial, x)
        # the reported loss describes the returned images
        with torch.no_grad():
            ce = F.cross_entropy(model(res.adversarial).float(), labels, reduction="none")
        torch.testing.assert_close(res.loss, ce, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- model wrappers
@pytest.mark.parametrize("kind", ["pgd", "embed-patch", "segpgd", "depthpgd"])
def test_compiled_model_gives_the_plain_result(kind: str) -> None:
    model, make, images, target = _setup(kind)
    plain = make(model)(images, target)
    compiled = torch.compile(model, backend="eager")
    adv = make(compiled)(images, target)
    torch.testing.assert_close(adv, plain, atol=1e-6, rtol=0)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", ["pgd", "segpgd", "depthpgd"])
def test_dataparallel_wrapped_model_gives_the_plain_result(kind: str) -> None:
    model, make, images, target = _setup(kind)
    plain = make(model)(images, target)
    assert torch.equal(make(nn.DataParallel(model))(images, target), plain)


@pytest.fixture
def gloo_world(tmp_path) -> Iterator[None]:  # type: ignore[no-untyped-def]
    if dist.is_initialized():
        pytest.skip("a process group is already initialized")
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.usefixtures("gloo_world")
@pytest.mark.parametrize("kind", ["pgd", "embed-cls", "segpgd"])
def test_ddp_wrapped_model_gives_the_plain_result(kind: str) -> None:
    model, make, images, target = _setup(kind)
    plain = make(model)(images, target)
    ddp = nn.parallel.DistributedDataParallel(model)
    assert torch.equal(make(ddp)(images, target), plain)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.usefixtures("gloo_world")
def test_fit_with_ddp_wrapped_task_model_matches_plain_fit() -> None:
    images, _, _ = scenes(8, seed=2)
    data = [(images[:4], torch.tensor([0, 1, 2, 3])), (images[4:], torch.tensor([4, 0, 1, 2]))]
    a, b = _classifier(), _classifier()
    fit(a, data, epochs=2, lr=1e-2, progress=False)
    fit(nn.parallel.DistributedDataParallel(b), data, epochs=2, lr=1e-2, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_fit_and_task_model_accept_compiled_parts() -> None:
    enc = tiny_vit().eval()
    head = LinearClassifier(32, 5)
    model = TaskModel(torch.compile(enc, backend="eager"), head)
    images = torch.rand(4, 3, 16, 16, generator=_gen())
    labels = torch.tensor([0, 1, 2, 3])
    before = head.linear.weight.detach().clone()
    hist = fit(
        torch.compile(model, backend="eager"), [(images, labels)], epochs=1, lr=1e-2, progress=False
    )
    assert len(hist["loss"]) == 1 and not torch.equal(before, head.linear.weight)
    adv = PGD(model, steps=2, generator=_gen())(images, labels)
    _assert_in_ball(adv, images)


def test_task_model_still_refuses_a_non_encoder() -> None:
    with pytest.raises(TypeError, match="Encoder"):
        TaskModel(torch.compile(nn.Linear(3, 3), backend="eager"), LinearClassifier(3, 2))


class _HFOutput:
    """What a Hugging Face image classifier returns: an object with ``.logits``."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        self.hidden_states = None


@pytest.mark.parametrize("style", ["object", "dict", "function"])
def test_hugging_face_outputs_and_plain_functions(style: str) -> None:
    model, _, images, labels = _setup("pgd")
    plain = PGD(model, steps=4, generator=_gen())(images, labels)

    def as_function(x: torch.Tensor) -> Any:
        out = model(x)
        return {"object": _HFOutput(out), "dict": {"logits": out}, "function": out}[style]

    assert torch.equal(PGD(as_function, steps=4, generator=_gen())(images, labels), plain)


def test_model_on_another_device_names_both() -> None:
    model = _classifier().to("meta")
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"model is on meta but the images are on cpu"):
        PGD(model)(images, torch.tensor([0, 1]))


# ----------------------------------------------------------- options without effect
@pytest.mark.parametrize(
    "make",
    [
        lambda m: EmbedAttack(m.encoder, early_stop=True),
        lambda m: DepthPGD(m, early_stop=True),
    ],
)
def test_early_stop_without_success_criterion_is_refused(make: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="no per-sample success criterion"):
        make(_classifier())


def test_functional_early_stop_without_success_warns() -> None:
    x = torch.rand(2, 3, 4, 4)
    with pytest.warns(UserWarning, match="early_stop=True has no effect"):
        pgd(
            lambda xa, i, s: (xa.flatten(1).sum(1), None),
            x,
            eps=0.1,
            step_size=0.1,
            steps=2,
            early_stop=True,
        )


def test_embed_attack_without_random_start_is_refused_without_target() -> None:
    enc = tiny_vit().eval()
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="gradient is exactly zero"):
        EmbedAttack(enc, random_start=False)(images)
    with torch.no_grad():
        other = enc(images.flip(-1)).cls
    adv = EmbedAttack(enc, random_start=False, steps=3)(images, other)  # a target moves it
    assert (adv - images).abs().max() > EPS / 2


# ------------------------------------------------------------- per-call checks
def test_value_checks_run_once_per_attack_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = torch.aminmax

    def counting(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return real(*a, **k)

    model, _, images, labels = _setup("pgd")
    monkeypatch.setattr(_checks.torch, "aminmax", counting)
    PGD(model, steps=5, generator=_gen())(images, labels)
    assert len(calls) == 1  # not once per forward (6 forwards through the encoder)
    calls.clear()
    model(images)  # a plain forward still checks its input
    assert len(calls) == 1


def test_global_switch_turns_value_checks_off() -> None:
    enc = tiny_vit().eval()
    bad = torch.full((1, 3, 16, 16), 2.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enc(bad)
    ssl_robust.set_input_checks(False)
    try:
        assert not ssl_robust.input_checks_enabled()
        enc(bad)  # no check, no error
    finally:
        ssl_robust.set_input_checks(True)
    with pytest.raises(TypeError, match="bool"):
        ssl_robust.set_input_checks(1)  # type: ignore[arg-type]


def test_no_warnings_in_plain_use() -> None:
    model, make, images, target = _setup("pgd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adv = make(model)(images, target)
    _assert_in_ball(adv, images)
