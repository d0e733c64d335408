"""check_evaluation on deliberately broken models: each flagged by the right indicator with the
right fix; a properly trained, unmasked model gets no failure; every task; errors; the report."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers_reliability import (
    Noisy,
    Quantized,
    Softmax,
    TinySegmenter,
    ZeroBackward,
    seg_data,
    template_data,
    trained_classifier,
)
from torch import nn

from ssl_robust.attacks import APGD, PGD, DepthPGD, EmbedAttack, SegPGD, Square, strong_attack
from ssl_robust.reliability import DEFAULT_THRESHOLDS, INDICATORS, check_evaluation

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.06


@pytest.fixture(scope="module")
def data():
    return template_data(48, seed=1)


def _check(model, data, attack=None, **kw):
    attack = attack if attack is not None else PGD(model, eps=EPS, steps=20)
    kw.setdefault("square_queries", 400)
    return check_evaluation(model, data, task="classification", attack=attack, **kw)


def test_trained_unmasked_model_gets_no_failure(data):
    model = trained_classifier()
    report = _check(model, data, APGD(model, eps=EPS, steps=50))
    assert report.failed == [] and report.warned == [], report.to_markdown()
    assert report.status == "pass"
    assert [r.indicator for r in report.rows] == list(INDICATORS)
    assert report.row("transfer").status == "skip"
    assert report.clean == 1.0 and 0 < report.attacked < 1
    assert 0.1 < report.floor < 0.5  # chance level of 4 classes on a subset


def test_zero_backward_model_flags_unavailable_gradients_and_square(data):
    real = trained_classifier()
    model = ZeroBackward(real)
    report = _check(model, data)
    for name in ("unavailable_gradients", "square_beats_white_box", "unconstrained_attack"):
        assert report.row(name).status == "fail", (name, report.to_markdown())
    assert report.row("unavailable_gradients").value == 1.0
    assert "Square" in report.row("unavailable_gradients").fix
    assert "BPDA" in report.row("unavailable_gradients").fix
    assert report.row("randomized_outputs").status == "pass"
    assert report.row("probability_outputs").status == "pass"


def test_rounding_preprocessor_flags_unavailable_gradients(data):
    model = Quantized(trained_classifier(), levels=8)
    report = _check(model, data)
    assert report.row("unavailable_gradients").status == "fail"
    assert report.row("square_beats_white_box").status == "fail"
    assert "non-differentiable" in report.row("unavailable_gradients").fix


def test_random_noise_model_flags_randomized_outputs_with_eot_fix(data):
    model = Noisy(trained_classifier(), sigma=0.3)
    rng = torch.get_rng_state()
    report = _check(model, data)
    assert torch.equal(torch.get_rng_state(), rng)
    row = report.row("randomized_outputs")
    assert row.status == "fail" and row.value == 1.0
    assert "eot_iter" in row.fix
    assert report.row("unavailable_gradients").status == "pass"


def test_softmax_output_model_flags_probability_outputs(data):
    model = Softmax(trained_classifier())
    report = _check(model, data)
    row = report.row("probability_outputs")
    assert row.status == "fail" and row.value == 1.0
    assert "logits" in row.fix
    assert "probability_outputs" not in _check(trained_classifier(), data).failed


def test_segmentation_masked_gradients_flagged_unmasked_passes():
    x, masks = seg_data(12, seed=0)
    seg = TinySegmenter().eval()
    attack = SegPGD(seg, eps=0.05, steps=20)
    clean = check_evaluation(seg, (x, masks), task="segmentation", attack=attack,
                             square_queries=200)  # fmt: skip
    assert clean.failed == [] and clean.warned == [], clean.to_markdown()
    assert clean.floor < 0.7  # another image's mask: near chance for 2 classes
    masked = ZeroBackward(seg).eval()
    attack = SegPGD(masked, eps=0.1, steps=20)
    report = check_evaluation(masked, (x, masks), task="segmentation", attack=attack,
                              square_queries=300)  # fmt: skip
    assert report.row("unavailable_gradients").status == "fail"
    assert report.row("square_beats_white_box").status == "fail"
    assert report.row("unconstrained_attack").status == "fail"
    assert report.row("probability_outputs").status == "pass"


class Wavy(nn.Module):
    """Class 1 wins where sin(60 * mean pixel) > 0: PGD iterates oscillate across it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sin(60 * x.mean((1, 2, 3)))
        return torch.stack([torch.zeros_like(s), 5 * s], 1)


def test_silent_success_when_the_attack_returns_the_last_iterate(data):
    model = Wavy().eval()
    x, _ = data
    y = torch.zeros(len(x), dtype=torch.long)
    attack = PGD(model, eps=0.1, step_size=0.05, steps=7, select="last")
    report = _check(model, (x, y), attack, skip=["square_beats_white_box"])
    row = report.row("silent_success")
    assert row.status == "fail" and row.value > 0
    assert "select='best'" in row.fix
    good = _check(model, (x, y), PGD(model, eps=0.1, step_size=0.05, steps=7))
    assert good.row("silent_success").value == 0.0


def test_incomplete_optimization_and_more_steps_on_a_short_attack(data):
    model = trained_classifier()
    report = _check(model, data, PGD(model, eps=0.1, step_size=0.006, steps=6),
                    skip=["square_beats_white_box"])  # fmt: skip
    assert report.row("incomplete_optimization").status == "warn"
    assert report.row("more_steps").status == "warn"
    assert "steps" in report.row("more_steps").fix


def test_transfer_from_a_surrogate_beats_the_masked_white_box(data):
    real = trained_classifier()
    model = ZeroBackward(real)
    report = _check(model, data, surrogate=real, skip=["square_beats_white_box"])
    assert report.row("transfer").status == "fail"
    assert report.row("square_beats_white_box").status == "skip"
    fine = _check(real, data, APGD(real, eps=EPS, steps=50), surrogate=real)
    assert fine.row("transfer").status == "pass"


def test_depth_and_embedding_reports():
    torch.manual_seed(0)
    net = nn.Conv2d(3, 1, 3, padding=1)
    depth_model = nn.Sequential(net, nn.Softplus()).eval()
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    depth = torch.rand(8, 8, 8, generator=torch.Generator().manual_seed(1)) * 3 + 0.5
    rep = check_evaluation(depth_model, (x, depth), task="depth", square_queries=50,
                           attack=DepthPGD(depth_model, eps=0.03, steps=5))  # fmt: skip
    assert rep.task == "depth" and not rep.higher_is_better
    assert rep.floor > rep.clean * 0.5  # an unrelated depth map is a bad prediction
    assert rep.row("probability_outputs").status == "skip"
    assert rep.row("unavailable_gradients").status == "pass"
    enc = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16)).eval()
    rep = check_evaluation(enc, x, task="embedding", square_queries=50,
                           attack=EmbedAttack(enc, eps=0.03, steps=5))  # fmt: skip
    assert rep.task == "embedding" and rep.clean == 0.0 and rep.floor > 0
    assert rep.row("unavailable_gradients").status == "pass"
    masked = ZeroBackward(enc)
    rep = check_evaluation(masked, x, task="embedding", square_queries=50,
                           attack=EmbedAttack(masked, eps=0.03, steps=5))  # fmt: skip
    assert rep.row("unavailable_gradients").status == "fail"


def test_default_attack_ensembles_and_square_as_the_checked_attack(data):
    model = trained_classifier()
    x, y = data
    rep = check_evaluation(model, (x[:16], y[:16]), task="classification", square_queries=50)
    assert "PGD(" in rep.attack
    ens = strong_attack(model, task="classification", eps=EPS, steps=10)
    rep = check_evaluation(model, (x[:16], y[:16]), task="classification", attack=ens,
                           square_queries=50)  # fmt: skip
    assert rep.attack.startswith("Ensemble") and rep.row("silent_success").status == "pass"
    sq = Square(model, eps=EPS, queries=50)
    rep = check_evaluation(model, (x[:16], y[:16]), task="classification", attack=sq,
                           square_queries=50)  # fmt: skip
    assert rep.row("square_beats_white_box").status == "skip"
    assert rep.row("silent_success").status == "skip"


def test_loader_input_and_subset(data):
    model = trained_classifier()
    x, y = data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=10)
    rep = check_evaluation(model, loader, task="classification", subset=25, square_queries=20,
                           attack=PGD(model, eps=EPS, steps=3))  # fmt: skip
    assert rep.samples == 25


def test_train_mode_warns_evaluates_in_eval_mode_and_restores():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 8 * 8, 4)).train()
    x, y = template_data(16, seed=2)
    with pytest.warns(UserWarning, match="train mode; it is checked in eval mode"):
        rep = check_evaluation(model, (x, y), task="classification", square_queries=20,
                               attack=PGD(model, eps=EPS, steps=3))  # fmt: skip
    assert rep.row("randomized_outputs").status == "pass"  # dropout was off
    assert all(m.training for m in model.modules())


def test_report_markdown_and_json(data):
    model = ZeroBackward(trained_classifier())
    rep = _check(model, data, skip=["eps_monotonicity"])
    md = rep.to_markdown()
    assert "| indicator | value | threshold | status | fix |" in md
    assert "**Evaluation check: FAIL**" in md
    assert "| unavailable_gradients | 1 | 0 | fail |" in md
    back = json.loads(rep.to_json())
    assert back["status"] == "fail" and "unavailable_gradients" in back["failed"]
    assert [r["indicator"] for r in back["rows"]] == list(INDICATORS)
    assert back["rows"][list(INDICATORS).index("eps_monotonicity")]["status"] == "skip"
    assert back["cost"] == pytest.approx(rep.check_seconds / rep.attack_seconds)
    for r in back["rows"]:
        assert set(r) == {"indicator", "value", "threshold", "status", "fix", "detail"}


def test_errors(data):
    model = trained_classifier()
    with pytest.raises(ValueError, match=r"thresholds\['silent_success'\] must be a fraction in"):
        _check(model, data, thresholds={"silent_success": 1.5})
    with pytest.raises(ValueError, match="unknown indicator 'bogus'"):
        _check(model, data, thresholds={"bogus": 0.1})
    with pytest.raises(ValueError, match="unknown indicator"):
        _check(model, data, skip=["nope"])
    with pytest.raises(ValueError, match="same object"):
        _check(model, data, attack=PGD(ZeroBackward(model)))
    with pytest.raises(ValueError, match="unknown task"):
        check_evaluation(model, data, task="detection")
    assert set(DEFAULT_THRESHOLDS) == set(INDICATORS)
    assert all(0 <= v <= 1 for v in DEFAULT_THRESHOLDS.values())
