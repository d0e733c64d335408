"""Checkpoint loading: released state dicts, DINO training checkpoints, torch.hub download."""

from __future__ import annotations

import argparse
import urllib.error
from pathlib import Path

import pytest
import torch

from ssl_robust.encoders import WeightsDownloadError, create_encoder, read_checkpoint


def _sd(seed: int = 0, name: str = "vit_test") -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_encoder(name).state_dict()


def _x() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = _x()
    oa, ob = a(x), b(x)
    return torch.equal(oa.cls, ob.cls) and torch.equal(oa.patches, ob.patches)


def test_released_state_dict_round_trip(tmp_path: Path) -> None:
    ref = create_encoder("vit_test")
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    enc = create_encoder("vit_test", checkpoint_path=tmp_path / "w.pth")
    assert _same(ref, enc)
    assert not enc.training
    assert all(p.requires_grad and p.device.type == "cpu" for p in enc.parameters())
    assert enc.mean.device.type == "cpu"


def test_dino_training_checkpoint_uses_teacher(tmp_path: Path) -> None:
    teacher, student = _sd(0), _sd(1)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    ckpt = {
        "student": {f"module.backbone.{k}": v for k, v in student.items()}
        | {"module.head.mlp.0.weight": torch.zeros(8, 32), "module.head.last.g": torch.ones(4, 1)},
        "teacher": {f"backbone.{k}": v for k, v in teacher.items()}
        | {"head.mlp.0.weight": torch.zeros(8, 32), "head.last_layer.weight_v": torch.ones(4, 8)},
        "optimizer": opt.state_dict(),
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, lr=0.0005, out_dim=65536,
                                   global_crops_scale=(0.4, 1.0), output_dir="."),
        "dino_loss": {"center": torch.zeros(1, 4)},
    }  # fmt: skip
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    enc = create_encoder("vit_test", checkpoint_path=str(tmp_path / "checkpoint.pth"))
    torch.manual_seed(0)
    assert _same(create_encoder("vit_test"), enc)
    assert not _same(create_encoder("vit_test", checkpoint_path=None), create_encoder("vit_test"))


def test_wrong_architecture_names_keys_and_shapes(tmp_path: Path) -> None:
    sd = _sd()
    sd["register_tokens"] = torch.zeros(1, 4, 32)
    sd["blocks.0.attn.qkv.weight"] = torch.zeros(96, 16)
    del sd["norm.weight"]
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ValueError) as info:
        create_encoder("vit_test", checkpoint_path=tmp_path / "w.pth")
    msg = str(info.value)
    assert "missing keys (1): norm.weight" in msg
    assert "unexpected keys (1): register_tokens" in msg
    assert "blocks.0.attn.qkv.weight: checkpoint (96, 16) vs model (96, 32)" in msg
    assert "_reg" in msg


def test_v1_checkpoint_into_dinov2_model_refused(tmp_path: Path) -> None:
    torch.save(_sd(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"missing keys .*mask_token"):
        create_encoder(
            "vit_test", checkpoint_path=tmp_path / "w.pth", layerscale=1.0, mask_token=True
        )


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoint file not found: '/nonexistent\.pth'"):
        create_encoder("vit_test", checkpoint_path="/nonexistent.pth")


def test_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="corrupt or not a torch checkpoint"):
        create_encoder("vit_test", checkpoint_path=tmp_path / "bad.pth")


def test_truncated_file(tmp_path: Path) -> None:
    torch.save(_sd(), tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not read checkpoint"):
        create_encoder("vit_test", checkpoint_path=tmp_path / "cut.pth")


class _Custom:
    pass


def test_arbitrary_pickled_objects_refused(tmp_path: Path) -> None:
    torch.save({"model": _sd(), "extra": _Custom()}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        create_encoder("vit_test", checkpoint_path=tmp_path / "w.pth")


def test_file_without_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="holds no state dict"):
        read_checkpoint(tmp_path / "w.pth")


def test_weights_and_pretrained_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        create_encoder("dino_vits16", checkpoint_path=tmp_path / "w.pth", pretrained=True)


def test_pretrained_offline_says_how_to_pass_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, **kw: object) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(
        WeightsDownloadError, match=r"checkpoint_path='/path/to/dino_deitsmall16_pretrain.pth'"
    ):
        create_encoder("dino_vits16", pretrained=True)


def test_pretrained_uses_official_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in create_encoder("dinov2_vits14_reg").state_dict().items()}
    seen: list[str] = []

    def fake(url: str, **kw: object) -> dict[str, torch.Tensor]:
        seen.append(url)
        assert kw.get("weights_only") is True
        return {k: torch.zeros(s) for k, s in shapes.items()}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake)
    enc = create_encoder("dinov2_vits14_reg", pretrained=True)
    assert seen == [
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth"
    ]
    assert enc.register_tokens is not None and not enc.register_tokens.is_meta
