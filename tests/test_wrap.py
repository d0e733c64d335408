"""wrap(): timm, HF transformers, torchvision, DINO / DINOv2 hub modules and callables."""

from __future__ import annotations

import sys

import pytest
import torch
from _helpers_encoders import dinov1_ref, dinov2_ref

from ssl_robust.encoders import Encoder, create_encoder, wrap


def _x(h: int = 28, w: int = 28) -> torch.Tensor:
    return torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_timm_vit_equals_timm_forward() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=2, num_classes=0,
        reg_tokens=2,
    ).eval()  # fmt: skip
    enc = wrap(model)
    x = _x()
    out = enc(x)
    tokens = model.forward_features(enc.normalize(x))
    _close(out.cls, tokens[:, 0])
    _close(out.patches, tokens[:, 3:])
    assert out.grid == (4, 4) and enc.embed_dim == 32 and enc.patch_size == 7
    assert set(dict(enc.named_parameters())) == {f"model.{k}" for k, _ in model.named_parameters()}


def test_timm_mean_std_from_config_and_override() -> None:
    timm = pytest.importorskip("timm")
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=28, patch_size=7, embed_dim=32, depth=1, num_heads=2, num_classes=0
    )
    model.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    assert wrap(model).mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert wrap(model, mean=(0.1, 0.2, 0.3)).mean.flatten().tolist() == pytest.approx(
        [0.1, 0.2, 0.3]
    )


def test_timm_string_and_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match=r"pip install ssl-robust\[timm\]"):
        wrap("timm:vit_tiny_patch16_224")


@pytest.mark.parametrize("cls_name", ["ViTModel", "Dinov2Model", "Dinov2WithRegistersModel"])
def test_hf_models_equal_hf_forward(cls_name: str) -> None:
    transformers = pytest.importorskip("transformers")
    config_cls = {
        "ViTModel": "ViTConfig",
        "Dinov2Model": "Dinov2Config",
        "Dinov2WithRegistersModel": "Dinov2WithRegistersConfig",
    }[cls_name]
    config = getattr(transformers, config_cls)(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=28, patch_size=7,
    )  # fmt: skip
    if cls_name == "ViTModel":
        model = transformers.ViTModel(config, add_pooling_layer=False).eval()
    else:
        model = getattr(transformers, cls_name)(config).eval()
    enc = wrap(model)
    regs = int(getattr(config, "num_register_tokens", 0) or 0)
    for h, w in [(28, 28), (35, 21)]:
        x = _x(h, w)
        out = enc(x)
        hidden = model(pixel_values=enc.normalize(x), **(
            {"interpolate_pos_encoding": (h, w) != (28, 28)} if cls_name == "ViTModel" else {}
        )).last_hidden_state  # fmt: skip
        _close(out.cls, hidden[:, 0])
        _close(out.patches, hidden[:, 1 + regs :])
        assert out.grid == (h // 7, w // 7)


def test_torchvision_vit_equals_torchvision_tokens() -> None:
    from torchvision.models.vision_transformer import VisionTransformer as TVViT

    torch.manual_seed(0)
    model = TVViT(image_size=28, patch_size=7, num_layers=2, num_heads=2, hidden_dim=32,
                  mlp_dim=64).eval()  # fmt: skip
    enc = wrap(model)
    x = _x()
    out = enc(x)
    # torchvision's own forward classifies from the normed CLS token: heads(tokens[:, 0])
    logits = model(enc.normalize(x))
    _close(model.heads(out.cls), logits)
    assert out.patches.shape == (2, 16, 32)


def test_dinov2_hub_module() -> None:
    ref = dinov2_ref(num_register_tokens=4)
    enc = wrap(ref)
    x = _x(42, 28)
    out = enc(x)
    feats = ref.forward_features(enc.normalize(x))
    _close(out.cls, feats["x_norm_clstoken"])
    _close(out.patches, feats["x_norm_patchtokens"])
    assert out.grid == (6, 4)


def test_dino_v1_hub_module() -> None:
    ref = dinov1_ref()
    enc = wrap(ref)
    x = _x(16, 24)
    out = enc(x)
    _close(out.cls, ref(enc.normalize(x)))
    _close(out.patches, ref.get_intermediate_layers(enc.normalize(x))[0][:, 1:])
    assert out.grid == (4, 6)


def test_callable_with_attributes_and_views() -> None:
    class Tokens(torch.nn.Module):
        embed_dim = 8
        patch_size = 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.last = x.mean() * torch.ones(x.shape[0], 1 + 4, 8)
            return self.last

    module = Tokens()
    enc = wrap(module, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = enc(_x(8, 8))
    assert out.patches.shape == (2, 4, 8)
    assert out.patches.data_ptr() == module.last[:, 1:].data_ptr()  # a view, no copy


def test_callable_padding_keeps_gradients() -> None:
    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = torch.nn.functional.avg_pool2d(x, 4).flatten(2).transpose(1, 2)
        return patches.mean(1), patches

    enc = wrap(fn, embed_dim=3, patch_size=4, pad="pad")
    x = _x(10, 13).requires_grad_(True)
    out = enc(x)
    assert out.grid == (3, 4)
    (g,) = torch.autograd.grad(out.patches.square().sum(), x)
    assert g.abs().sum() > 0
    with pytest.raises(ValueError, match="multiples of the patch size 4"):
        wrap(fn, embed_dim=3, patch_size=4)(x)


def test_encoder_returned_unchanged() -> None:
    enc = create_encoder("vit_test")
    assert wrap(enc) is enc


def test_bad_targets() -> None:
    with pytest.raises(TypeError, match="cannot wrap int"):
        wrap(3)
    with pytest.raises(TypeError, match="needs embed_dim="):
        wrap(lambda x: x)
    with pytest.raises(TypeError, match="unexpected keyword argument 'eps'"):
        wrap(lambda x: x, eps=1)
    with pytest.raises(ValueError, match="only 'timm:<model name>'"):
        wrap("dinov2_vits14")
    enc = wrap(lambda x: torch.zeros(x.shape[0], 3, 8), embed_dim=8, patch_size=4)
    with pytest.raises(ValueError, match=r"expected 2×2 = 4"):
        enc(_x(8, 8))
    with pytest.raises(ValueError, match="3 channels"):
        enc(torch.rand(1, 1, 8, 8))
    assert isinstance(enc, Encoder)
