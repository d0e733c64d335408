"""The streaming evaluation loop: equal to an explicit per-sample computation, independent
of the batch size and of the number of ranks, attack once / evaluate many."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ssl_robust import EmbedAttack, TaskModel, evaluate
from ssl_robust.attacks import Attack
from ssl_robust.data import create_dataset
from ssl_robust.encoders import VisionTransformer
from ssl_robust.evaluation import sample_seeds, seeded_starts
from ssl_robust.tasks import get_task


def _setup():
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2).eval()
    data = create_dataset("shapes", split="val", size=10, image_size=16)
    models = {}
    for task in ("segmentation", "depth"):
        torch.manual_seed(1)
        models[task] = TaskModel(enc, get_task(task).make_head(16, data.info)).eval()
    return enc, data, models


def _attacks(enc, info):
    return {
        "embed": EmbedAttack(enc, tokens="patch", steps=2),
        "task": lambda m: get_task(m.adaptor.task).make_attack(m, info, steps=2),
    }


def _run(batch_size: int, keep: int = 0):
    enc, data, models = _setup()
    loader = DataLoader(data, batch_size=batch_size)
    return evaluate(models, loader, attacks=_attacks(enc, data.info), info=data.info, keep=keep)


def _same_values(a, b) -> None:
    """Equal up to float rounding: the adversarial images are bitwise equal, but float32
    predictions (the depth head's bin mixing) round differently in batches of other sizes."""
    assert a.keys() == b.keys()
    for model in a:
        assert a[model].keys() == b[model].keys()
        for cond in a[model]:
            assert a[model][cond] == pytest.approx(b[model][cond], rel=1e-6), (model, cond)


def test_results_do_not_depend_on_the_batch_size() -> None:
    a, b = _run(4, keep=10), _run(8, keep=10)
    _same_values(a.headline, b.headline)
    for model in a.kept:  # every adversarial image is bitwise the same
        assert a.kept[model].keys() == b.kept[model].keys()
        for key in a.kept[model]:
            assert a.kept[model][key].shape[0] == 10
            x, y = a.kept[model][key], b.kept[model][key]
            if key.startswith("pred/") and x.is_floating_point():
                assert torch.allclose(x, y, rtol=1e-5, atol=1e-6), (model, key)
            else:
                assert torch.equal(x, y), (model, key)
    assert _run(4, keep=3).kept["depth"]["adv/embed"].shape[0] == 3  # only `keep` are held


def test_equals_an_explicit_per_sample_loop() -> None:
    enc, data, models = _setup()
    res = evaluate(
        models, DataLoader(data, batch_size=3), attacks=_attacks(enc, data.info), info=data.info
    )
    for task, model in models.items():
        spec = get_task(task)
        attacks = _attacks(enc, data.info)
        task_attack = attacks["task"](model)
        metrics = {c: spec.make_metric(data.info) for c in ("clean", "embed", "task")}
        for i in range(len(data)):
            s = data[i]
            x, t = s["image"][None], s[spec.target_key][None]  # type: ignore[literal-required]
            with seeded_starts(attacks["embed"], sample_seeds(0, "embed", [i])):
                adv_e = attacks["embed"](x)
            with seeded_starts(task_attack, sample_seeds(0, "task", [i])):
                adv_t = task_attack(x, t)
            with torch.no_grad():
                for cond, img in (("clean", x), ("embed", adv_e), ("task", adv_t)):
                    metrics[cond].update(model(img), t)
        for cond, m in metrics.items():
            assert res.headline[task][cond] == pytest.approx(
                spec.headline(m.compute()), rel=1e-5, abs=1e-6
            ), (task, cond)


class _Counting(EmbedAttack):
    calls = 0

    def prepare_target(self, images, target):
        type(self).calls += 1
        return super().prepare_target(images, target)


def test_a_shared_attack_runs_once_per_batch_for_every_model() -> None:
    enc, data, models = _setup()
    _Counting.calls = 0
    attack: Attack = _Counting(enc, tokens="patch", steps=1)
    res = evaluate(models, DataLoader(data, batch_size=4), attacks={"e": attack}, info=data.info)
    assert _Counting.calls == 3  # 10 images in batches of 4: 3 batches, 2 models
    assert set(res.headline) == {"segmentation", "depth"} and res.seconds["e"] > 0


def test_bad_arguments_are_refused() -> None:
    _, data, models = _setup()
    loader = DataLoader(data, batch_size=4)
    with pytest.raises(TypeError, match="attacks\\['x'\\] must be an Attack or a factory"):
        evaluate(models, loader, attacks={"x": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at least one model"):
        evaluate({}, loader)
    with pytest.raises(ValueError, match="unknown task"):
        evaluate(models["depth"], loader, task="detection")


def _rank_main(rank: int, world: int, path: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    try:
        res = _run(3, keep=2)
        if rank == 0:
            kept = res.kept["depth"]["adv/task"]
            saved = {"headline": res.headline, "samples": res.samples, "adv": kept}
            torch.save({**saved, "world": res.world_size}, out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path) -> None:
    import torch.multiprocessing as mp

    out = str(tmp_path / "res.pt")
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks' setting: the same kernels, the same float rounding
    try:
        single = _run(3, keep=2)
    finally:
        torch.set_num_threads(threads)
    assert got["world"] == 2 and got["samples"] == single.samples == 10
    _same_values(got["headline"], single.headline)
    assert torch.equal(got["adv"], single.kept["depth"]["adv/task"])  # rank 0's 2 kept samples


def test_restarts_run_and_stay_deterministic() -> None:
    from ssl_robust.attacks import PGD

    torch.manual_seed(0)
    enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2).eval()
    data = create_dataset("shapes", split="val", size=8, image_size=16)
    model = TaskModel(enc, get_task("classification").make_head(16, data.info)).eval()

    def run():
        attacks = {"pgd": lambda m: PGD(m, steps=2, restarts=3)}
        return evaluate(model, DataLoader(data, batch_size=4), attacks=attacks, keep=8)

    a, b = run(), run()
    assert a.headline == b.headline
    assert torch.equal(a.kept["model"]["adv/pgd"], b.kept["model"]["adv/pgd"])
    assert a.headline["model"]["pgd"] <= a.headline["model"]["clean"]


def _strong_run(batch_size: int):
    _, data, models = _setup()
    attacks = {
        "strong": lambda m: get_task(m.adaptor.task).make_strong_attack(m, data.info, steps=2)
    }
    loader = DataLoader(data, batch_size=batch_size)
    return evaluate(models, loader, attacks=attacks, info=data.info, keep=10)


def test_strong_attack_ensembles_stream_and_do_not_depend_on_the_batch_size() -> None:
    """Ensemble members that run only on the samples left keep each sample's own seed."""
    a, b = _strong_run(3), _strong_run(10)
    _same_values(a.headline, b.headline)
    for model in a.kept:
        assert torch.equal(a.kept[model]["adv/strong"], b.kept[model]["adv/strong"]), model
        # the worst case is at least as damaging as the clean prediction, per the task's metric
        spec = get_task(model)
        clean, strong = a.headline[model]["clean"], a.headline[model]["strong"]
        assert strong <= clean + 1e-9 if spec.higher_is_better else strong >= clean - 1e-9
