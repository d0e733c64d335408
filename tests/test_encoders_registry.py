"""Encoder registry: names, official architecture facts, equality with the official arithmetic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers_encoders import dinov1_ref, dinov2_ref

from ssl_robust.encoders import VisionTransformer, create_encoder, encoder_spec, list_encoders

OFFICIAL = [
    "dino_vits16", "dino_vits8", "dino_vitb16", "dino_vitb8",
    "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14",
    "dinov2_vits14_reg", "dinov2_vitb14_reg", "dinov2_vitl14_reg",
]  # fmt: skip


def _meta(name: str) -> VisionTransformer:
    with torch.device("meta"):
        return create_encoder(name)


def test_list_encoders_has_official_and_small_models() -> None:
    names = list_encoders()
    assert names == sorted(names)
    assert set(OFFICIAL) <= set(names)
    assert {"vit_test", "vit_tiny"} <= set(names)


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_architecture_facts(name: str) -> None:
    sd = _meta(name).state_dict()
    size = name.split("_vit")[1][0]
    d, heads, depth = {"s": (384, 6, 12), "b": (768, 12, 12), "l": (1024, 16, 24)}[size]
    enc = _meta(name)
    assert (enc.embed_dim, enc.num_heads, enc.depth) == (d, heads, depth)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (4 * d, d)
    assert f"blocks.{depth - 1}.norm1.weight" in sd and f"blocks.{depth}.norm1.weight" not in sd
    if name.startswith("dinov2"):
        assert enc.patch_size == 14
        assert sd["pos_embed"].shape == (1, 37 * 37 + 1, d)
        assert sd["mask_token"].shape == (1, d)
        assert sd["blocks.0.ls1.gamma"].shape == (d,) and "blocks.0.ls2.gamma" in sd
        if name.endswith("_reg"):
            assert sd["register_tokens"].shape == (1, 4, d)
            assert (enc.interpolate_offset, enc.interpolate_antialias) == (0.0, True)
        else:
            assert "register_tokens" not in sd
            assert (enc.interpolate_offset, enc.interpolate_antialias) == (0.1, False)
    else:
        p = int(name[-2:]) if name[-2:].isdigit() else int(name[-1])
        assert enc.patch_size == p
        assert sd["pos_embed"].shape == (1, (224 // p) ** 2 + 1, d)
        assert not any("ls1" in k or k == "mask_token" for k in sd)


@pytest.mark.parametrize("name", ["vit_test", "vit_tiny"])
def test_small_models_meet_the_encoder_contract(name: str) -> None:
    enc = create_encoder(name)
    assert not enc.training
    size = enc.img_size
    out = enc(torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
    g = size // enc.patch_size
    assert out.cls.shape == (2, enc.embed_dim)
    assert out.patches.shape == (2, g * g, enc.embed_dim)
    assert out.grid == (g, g)


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(
        ValueError, match=r"unknown encoder 'dinov2_vits16'.*did you mean.*dino_vits16"
    ):
        create_encoder("dinov2_vits16")
    with pytest.raises(ValueError, match=r"choose one of: .*dinov2_vitl14_reg"):
        encoder_spec("resnet50")


def test_unknown_keyword_refused() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'layers'"):
        create_encoder("vit_test", layers=1)


def test_pretrained_without_official_weights_refused() -> None:
    with pytest.raises(ValueError, match="no official weights"):
        create_encoder("vit_test", pretrained=True)


def test_wrong_channel_count_refused() -> None:
    with pytest.raises(ValueError, match="3 channels"):
        create_encoder("vit_test")(torch.rand(1, 1, 16, 16))


def _load_into(ref: torch.nn.Module, enc: VisionTransformer) -> None:
    enc.load_state_dict(ref.state_dict(), strict=True)


@pytest.mark.parametrize("hw", [(16, 16), (24, 16), (12, 20)])
def test_matches_official_dino_v1_arithmetic(hw: tuple[int, int]) -> None:
    ref = dinov1_ref()
    enc = create_encoder("vit_test")
    _load_into(ref, enc)
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    out = enc(x)
    tokens = ref.get_intermediate_layers(enc.normalize(x), n=1)[0]
    torch.testing.assert_close(out.cls, tokens[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.patches, tokens[:, 1:], rtol=1e-5, atol=1e-5)
    assert out.grid == (hw[0] // 4, hw[1] // 4)


@pytest.mark.parametrize("registers", [False, True])
@pytest.mark.parametrize("hw", [(28, 28), (42, 28), (21, 35)])
def test_matches_official_dinov2_arithmetic(registers: bool, hw: tuple[int, int]) -> None:
    interp = dict(num_register_tokens=4, interpolate_offset=0.0, interpolate_antialias=True)
    ref = dinov2_ref(**(interp if registers else {}))
    enc = VisionTransformer(
        img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=2, layerscale=1.0,
        mask_token=True, **(interp if registers else {}),  # type: ignore[arg-type]
    )  # fmt: skip
    _load_into(ref, enc)
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(2))
    out = enc(x)
    feats = ref.forward_features(enc.normalize(x))
    torch.testing.assert_close(out.cls, feats["x_norm_clstoken"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.patches, feats["x_norm_patchtokens"], rtol=1e-5, atol=1e-5)


def test_register_variant_interpolation_differs_from_offset_kludge() -> None:
    # The '_reg' checkpoints were trained with size-based antialiased interpolation: the v1-style
    # scale-factor interpolation gives different position embeddings (this caught a deviation).
    enc = VisionTransformer(img_size=28, patch_size=7, embed_dim=8, depth=1, num_heads=2,
                            interpolate_offset=0.0, interpolate_antialias=True)  # fmt: skip
    pos = enc.interpolate_pos_encoding(6, 3, torch.float32)
    grid = enc.pos_embed[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(6, 3), mode="bicubic", antialias=True)
    torch.testing.assert_close(pos[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 18, 8))
    kludge = F.interpolate(grid, scale_factor=(6.1 / 4, 3.1 / 4), mode="bicubic")
    assert not torch.allclose(pos[:, 1:], kludge.permute(0, 2, 3, 1).reshape(1, 18, 8))


@pytest.mark.parametrize(("layer", "norm"), [(0, False), (0, True), (-1, False)])
def test_layer_and_norm_options(layer: int, norm: bool) -> None:
    ref = dinov1_ref()
    enc = create_encoder("vit_test", layer=layer, norm=norm)
    _load_into(ref, enc)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    tokens = ref.all_blocks(enc.normalize(x))[layer]
    if norm:
        tokens = ref.norm(tokens)
    out = enc(x)
    torch.testing.assert_close(out.cls, tokens[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.patches, tokens[:, 1:], rtol=1e-5, atol=1e-5)


def test_pad_option_pads_and_keeps_gradients() -> None:
    enc = create_encoder("vit_test", pad="pad")
    x = torch.rand(1, 3, 14, 18, generator=torch.Generator().manual_seed(4), requires_grad=True)
    out = enc(x)
    assert out.grid == (4, 5)
    w = torch.randn(out.cls.shape, generator=torch.Generator().manual_seed(5))
    (grad,) = torch.autograd.grad((out.cls * w).sum(), x)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiples of the patch size 4"):
        create_encoder("vit_test")(x)
