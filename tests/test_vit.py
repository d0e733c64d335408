"""The built-in VisionTransformer: official parameter names, arithmetic, sizes, options."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vit

from ssl_robust.encoders import IMAGENET_MEAN, IMAGENET_STD, Encoder, VisionTransformer


def test_parameter_names_match_official_checkpoints():
    v2 = tiny_vit(num_register_tokens=4, layerscale=1e-5, mask_token=True)
    keys = set(v2.state_dict())
    expected = {
        "cls_token",
        "pos_embed",
        "register_tokens",
        "mask_token",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "norm.weight",
        "norm.bias",
    }
    for i in range(2):
        for name in (
            "norm1.weight",
            "norm1.bias",
            "attn.qkv.weight",
            "attn.qkv.bias",
            "attn.proj.weight",
            "attn.proj.bias",
            "ls1.gamma",
            "norm2.weight",
            "norm2.bias",
            "mlp.fc1.weight",
            "mlp.fc1.bias",
            "mlp.fc2.weight",
            "mlp.fc2.bias",
            "ls2.gamma",
        ):
            expected.add(f"blocks.{i}.{name}")
    assert keys == expected
    assert v2.mask_token.shape == (1, 32) and v2.register_tokens.shape == (1, 4, 32)
    assert v2.pos_embed.shape == (1, 17, 32)
    v1 = tiny_vit()
    assert not any("ls1" in k or "register" in k or "mask_token" in k for k in v1.state_dict())
    assert "mean" not in v1.state_dict()  # normalization buffers are not checkpoint keys


def _reference_forward(vit: VisionTransformer, images: torch.Tensor):
    """Naive ViT written from the papers (explicit softmax attention), for comparison."""
    sd = {k: v.double() for k, v in vit.state_dict().items()}
    # A float64 encoder normalizes with the exact float64 constants.
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    x = (images.double() - mean) / std
    x = F.conv2d(
        x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=vit.patch_size
    )
    b, d, _, _ = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], 1) + sd["pos_embed"]
    r = vit.num_register_tokens
    if r:
        x = torch.cat([x[:, :1], sd["register_tokens"].expand(b, -1, -1), x[:, 1:]], 1)
    heads = vit.num_heads
    for i in range(vit.depth):
        p = f"blocks.{i}."
        y = F.layer_norm(x, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = qkv.reshape(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, -1, d)
        y = y @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        x = x + y * sd.get(p + "ls1.gamma", torch.tensor(1.0, dtype=torch.float64))
        y = F.layer_norm(x, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        y = y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        x = x + y * sd.get(p + "ls2.gamma", torch.tensor(1.0, dtype=torch.float64))
    x = F.layer_norm(x, (d,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return x[:, 0], x[:, 1 + r :]


@pytest.mark.parametrize("kw", [{}, {"num_register_tokens": 4, "layerscale": 0.5}])
def test_matches_naive_reference(kw, images):
    vit = tiny_vit(**kw).double().eval()
    for p in vit.parameters():  # make LayerScale, biases and norms non-trivial
        p.data.add_(torch.randn_like(p) * 0.1)
    out = vit(images.double())
    cls, patches = _reference_forward(vit, images)
    torch.testing.assert_close(out.cls, cls, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out.patches, patches, atol=1e-10, rtol=1e-10)
    assert out.grid == (4, 4)


def test_other_and_non_square_sizes_interpolate_position_embeddings():
    vit = tiny_vit().eval()
    out = vit(torch.rand(2, 3, 24, 32))
    assert out.grid == (6, 8) and out.patches.shape == (2, 48, 32)
    pos = vit.interpolate_pos_encoding(6, 8, torch.float32)
    assert pos.shape == (1, 49, 32)
    torch.testing.assert_close(pos[:, 0], vit.pos_embed[:, 0])
    # Bicubic interpolation with DINO's 0.1 offset, computed independently.
    grid = vit.pos_embed[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(6.1 / 4, 8.1 / 4), mode="bicubic")
    torch.testing.assert_close(pos[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 48, 32))
    assert vit.interpolate_pos_encoding(4, 4, torch.float32) is not None
    torch.testing.assert_close(vit.interpolate_pos_encoding(4, 4, torch.float32), vit.pos_embed)


def test_padding_option_and_refusal():
    vit = tiny_vit().eval()
    with pytest.raises(ValueError, match=r"multiples of the patch size 4; got 18×16.*pad='pad'"):
        vit(torch.rand(1, 3, 18, 16))
    padded = tiny_vit(pad="pad").eval()
    padded.load_state_dict(vit.state_dict())
    x = torch.rand(1, 3, 18, 16, requires_grad=True)
    out = padded(x)
    assert out.grid == (5, 4)
    out.patches.pow(2).sum().backward()  # gradients flow through the padding
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_intermediate_layer_and_unnormed_tokens(images):
    vit = tiny_vit().eval()
    first = tiny_vit(output_layer=0, output_norm=False).eval()
    first.load_state_dict(vit.state_dict())
    tokens, _ = vit._tokens(vit.normalize(images))
    expected = vit.blocks[0](tokens)
    out = first(images)
    torch.testing.assert_close(out.cls, expected[:, 0])
    torch.testing.assert_close(out.patches, expected[:, 1:])
    last_raw = tiny_vit(output_norm=False).eval()
    last_raw.load_state_dict(vit.state_dict())
    torch.testing.assert_close(vit.norm(last_raw(images).patches), vit(images).patches)


def test_normalization_lives_inside(images):
    vit = tiny_vit().eval()
    shifted = tiny_vit(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    shifted.load_state_dict(vit.state_dict())
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(shifted.forward_features((images - mean) / std).cls, vit(images).cls)


def test_bad_configurations_and_inputs():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        VisionTransformer(img_size=16, patch_size=4, embed_dim=30, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        VisionTransformer(img_size=18, patch_size=4, embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match=r"output_layer must be in \[-2, 1\]"):
        tiny_vit(output_layer=2)
    with pytest.raises(ValueError, match="pad must be one of"):
        tiny_vit(pad="crop")
    with pytest.raises(ValueError, match="std must be > 0"):
        tiny_vit(std=(0.0, 1.0, 1.0))
    vit = tiny_vit()
    with pytest.raises(ValueError, match=r"3 channels .*got shape \(1, 1, 16, 16\)"):
        vit(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"channels-last input\? use images.permute"):
        vit(torch.rand(1, 16, 16, 3))
    with pytest.raises(ValueError, match="Normalization belongs to the Encoder"):
        vit(torch.randn(1, 3, 16, 16))


def test_encoder_base_requires_forward_features():
    enc = Encoder(embed_dim=4, patch_size=2)
    with pytest.raises(NotImplementedError):
        enc(torch.rand(1, 3, 4, 4))


def test_float64_encoders_compute_in_float64_throughout() -> None:
    from ssl_robust.encoders import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    enc = VisionTransformer(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2)
    x = torch.rand(1, 3, 8, 12, dtype=torch.float64)
    exact = (x - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD, dtype=torch.float64
    ).view(1, 3, 1, 1)
    assert torch.equal(enc.double().normalize(x), exact)  # not float32-rounded constants
    # float32 runs see the same constants as ever
    x32 = x.float()
    old = (x32 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    assert torch.equal(enc.float().normalize(x32), old)
    # position embeddings interpolated for another grid (2 × 3) in float64
    enc = enc.double()
    pos = enc.interpolate_pos_encoding(2, 3, torch.float64)
    grid = enc.pos_embed[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(
        grid, scale_factor=(2.1 / 4, 3.1 / 4), mode="bicubic", align_corners=False
    )
    assert pos.dtype == torch.float64
    assert torch.equal(pos[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 6, -1))
