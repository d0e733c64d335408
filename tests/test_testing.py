"""ssl_robust.testing: the contract checks pass on every built-in and catch broken parts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vit
from torch import Tensor

from ssl_robust.adaptors import LinearClassifier, LinearDepther, LinearSegmenter, TaskModel
from ssl_robust.attacks import APGD, PGD, Attack, DepthPGD, EmbedAttack, SegPGD
from ssl_robust.encoders import Encoder, EncoderOutput, create_encoder, list_encoders
from ssl_robust.metrics import Metric
from ssl_robust.tasks import TaskAttack, TaskSpec, get_task, list_tasks
from ssl_robust.testing import ContractError, check_attack, check_encoder, check_task


@pytest.mark.parametrize("task", list_tasks())
def test_every_registered_task_passes_check_task(task: str) -> None:
    check_task(get_task(task))


@pytest.mark.parametrize("name", ["vit_test", "vit_tiny", "vit_tiny_shapes"])
def test_small_registered_encoders_pass_check_encoder(name: str) -> None:
    enc = create_encoder(name)
    enc.train()
    check_encoder(enc)
    assert enc.training  # modes restored


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if "vitl" in n else n
        for n in list_encoders()
        if n not in ("vit_test", "vit_tiny", "vit_tiny_shapes")
    ],
)
def test_every_registered_encoder_passes_check_encoder(name: str) -> None:
    enc = create_encoder(name)  # random weights, no download
    check_encoder(enc, image_size=2 * enc.patch_size)  # a 2 × 2 grid (interpolated positions)


def test_float64_encoder_passes_check_encoder() -> None:
    check_encoder(create_encoder("vit_test").double())


def _models():
    enc = tiny_vit()
    return (
        enc,
        TaskModel(enc, LinearClassifier(32, 4)).eval(),
        TaskModel(enc, LinearSegmenter(32, 3)).eval(),
        TaskModel(enc, LinearDepther(32, bins=8)).eval(),
    )


def test_built_in_attacks_pass_check_attack() -> None:
    enc, cls, seg, depth = _models()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels, masks = torch.tensor([0, 3]), torch.randint(0, 3, (2, 16, 16))
    depth_map = torch.rand(2, 16, 16) * 5 + 1
    check_attack(PGD(cls, steps=2), x, labels)
    check_attack(APGD(cls, steps=2), x, labels)
    check_attack(APGD(cls, steps=2, loss="dlr", targeted=True), x, labels)
    check_attack(PGD(cls, steps=2, norm="l2", eps=0.5, step_size=0.1), x, labels)
    check_attack(SegPGD(seg, steps=2), x, masks)
    check_attack(DepthPGD(depth, steps=2), x, depth_map)
    check_attack(EmbedAttack(enc, steps=2), x)
    check_attack(EmbedAttack(enc, steps=2, tokens="patch", distance="cosine"), x)
    check_attack(TaskAttack(cls, spec="classification", steps=2, schedule="apgd"), x, labels)


class _MSE(Metric[Tensor]):
    """Mean squared error, wrongly declared higher-is-better."""

    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sse", torch.zeros((), dtype=torch.float64))
        self.add_state("n", torch.zeros((), dtype=torch.long))

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.accumulate("sse", (pred - target).double().pow(2).sum())
        self.accumulate("n", torch.tensor(target.numel()))

    def _compute(self, state: dict[str, Tensor]) -> Tensor:
        return state["sse"] / state["n"].clamp_min(1)


class _Head(LinearClassifier):
    task = "regress"


def _regress(**kw) -> TaskSpec:
    fields = dict(
        name="regress",
        target_key="value",
        make_head=lambda dim, info, **o: _Head(dim, 2),
        loss=lambda out, y, info: (out - y).pow(2).mean(1),
        make_metric=lambda info: _MSE(),
        higher_is_better=True,
        dense=False,
    )
    return TaskSpec(**{**fields, **kw})


def test_check_task_catches_a_metric_direction_that_contradicts_its_damage() -> None:
    with pytest.raises(ContractError, match="declared direction contradicts it"):
        check_task(_regress())


def test_check_task_catches_a_loss_that_is_not_per_sample() -> None:
    spec = _regress(loss=lambda out, y, info: (out - y).pow(2).mean(), higher_is_better=False)
    with pytest.raises(
        ContractError, match=r"loss must be per sample; expected shape \(3,\), got \(\)"
    ):
        check_task(spec)


def test_check_task_catches_a_head_of_another_task() -> None:
    spec = _regress(make_head=lambda dim, info, **o: LinearClassifier(dim, 2))
    with pytest.raises(ContractError, match="expected 'regress', got 'classification'"):
        check_task(spec)


def test_check_task_catches_a_batch_dependent_loss() -> None:
    spec = _regress(
        loss=lambda out, y, info: (out - y).pow(2).mean(1) / out.shape[0],
        higher_is_better=False,
        make_metric=lambda info: _MSELow(),
    )
    with pytest.raises(ContractError, match="must not depend on the batch"):
        check_task(spec)


class _MSELow(_MSE):
    higher_is_better = False


def test_a_correct_regression_task_passes() -> None:
    check_task(_regress(higher_is_better=False, make_metric=lambda info: _MSELow()))


class _Tamper(Attack):
    task = None

    def loss(self, output: Tensor, target: Tensor, step: int) -> Tensor:
        with torch.no_grad():
            next(iter(self.model.parameters())).add_(1.0)  # type: ignore[union-attr]
        return F.cross_entropy(output, target, reduction="none")


def test_check_attack_catches_an_attack_that_changes_the_model() -> None:
    _, cls, _, _ = _models()
    with pytest.raises(ContractError, match="parameters must be unchanged"):
        check_attack(_Tamper(cls, steps=1), torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))


class _BadEncoder(Encoder):
    embed_dim = 8

    def __init__(self) -> None:
        super().__init__(embed_dim=8, patch_size=1)
        self.proj = torch.nn.Linear(3, 4)

    def forward(self, images: Tensor) -> EncoderOutput:
        tokens = self.proj(images.flatten(2).transpose(1, 2))
        return EncoderOutput(tokens.mean(1), tokens, (images.shape[-2], images.shape[-1]))


def test_check_encoder_catches_a_wrong_embed_dim() -> None:
    with pytest.raises(ContractError, match=r"cls must be \(B, embed_dim\); expected \(2, 8\)"):
        check_encoder(_BadEncoder(), image_size=8)
