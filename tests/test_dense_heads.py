"""LinearSegmenter, LinearDepther, sliding-window inference and feature_view."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers_dense import encoder

from ssl_robust import SSLRobustTypeError, SSLRobustValueError
from ssl_robust.adaptors import (
    LinearDepther,
    LinearSegmenter,
    SlidingWindow,
    TaskModel,
    feature_view,
    sliding_window_inference,
)
from ssl_robust.encoders import EncoderOutput

pytestmark = pytest.mark.usefixtures("one_thread")

G = torch.Generator().manual_seed(0)


def _feats(b: int = 3, d: int = 8, grid: tuple[int, int] = (2, 3)) -> EncoderOutput:
    n = grid[0] * grid[1]
    return EncoderOutput(torch.randn(b, d, generator=G), torch.randn(b, n, d, generator=G), grid)


def test_segmenter_matches_formula_and_is_batched() -> None:
    head = LinearSegmenter(8, 4).eval()
    torch.nn.init.normal_(head.conv.weight)
    feats = _feats()
    out = head(feats, (10, 13))
    assert out.shape == (3, 4, 10, 13)
    pm = feats.patches.transpose(1, 2).reshape(3, 8, 2, 3)
    bn = head.bn
    z = (pm - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    z = z * bn.weight[:, None, None] + bn.bias[:, None, None]
    logits = torch.einsum("bdhw,cd->bchw", z, head.conv.weight[:, :, 0, 0])
    logits = logits + head.conv.bias[:, None, None]
    want = F.interpolate(logits, size=(10, 13), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head(feats[1], (10, 13)), out[1:2], atol=1e-5, rtol=1e-5)


def test_depther_matches_literal_protocol() -> None:
    head = LinearDepther(8, min_depth=0.5, max_depth=4.0, bins=7)
    torch.nn.init.normal_(head.conv.weight)
    feats = _feats()
    out = head(feats, (9, 14))
    assert out.shape == (3, 1, 9, 14)
    # literal order: concat, upsample x4, 1x1 conv, relu + 0.1, normalize, expectation, resize
    pm = feats.patches.transpose(1, 2).reshape(3, 8, 2, 3)
    x = torch.cat((pm, feats.cls[:, :, None, None].expand_as(pm)), 1)
    x = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    z = F.conv2d(x, head.conv.weight, head.conv.bias)
    p = F.relu(z) + 0.1
    p = p / p.sum(1, keepdim=True)
    d = (p * torch.linspace(0.5, 4.0, 7)[None, :, None, None]).sum(1, keepdim=True)
    want = F.interpolate(d, size=(9, 14), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    assert bool((out >= 0.5).all() and (out <= 4.0).all())


def test_head_bad_inputs() -> None:
    with pytest.raises(SSLRobustValueError, match="num_classes"):
        LinearSegmenter(8, 0)
    with pytest.raises(SSLRobustValueError, match="bins"):
        LinearDepther(8, bins=1)
    with pytest.raises(SSLRobustValueError, match="smaller than max_depth"):
        LinearDepther(8, min_depth=2.0, max_depth=2.0)
    with pytest.raises(SSLRobustValueError, match=r"\(B, N, 16\)"):
        LinearSegmenter(16, 3)(_feats(), (8, 8))
    with pytest.raises(SSLRobustValueError, match="LinearDepther expects"):
        LinearDepther(16)(_feats(), (8, 8))


def test_task_model_dense_outputs_at_input_resolution() -> None:
    enc = encoder()
    x = torch.rand(2, 3, 16, 24, generator=G)
    assert TaskModel(enc, LinearSegmenter(32, 5)).eval()(x).shape == (2, 5, 16, 24)
    assert TaskModel(enc, LinearDepther(32, bins=8))(x).shape == (2, 1, 16, 24)


def _ref_sliding(model, x, wh, ww, sh, sw):  # type: ignore[no-untyped-def]
    """A loop over windows and images, written independently."""
    b, _, h, w = x.shape
    ph, pw = max(h, wh), max(w, ww)
    xp = torch.zeros(b, x.shape[1], ph, pw, dtype=x.dtype)
    xp[:, :, :h, :w] = x
    ys = list(range(0, ph - wh + 1, sh))
    xs = list(range(0, pw - ww + 1, sw))
    if ys[-1] != ph - wh:
        ys.append(ph - wh)
    if xs[-1] != pw - ww:
        xs.append(pw - ww)
    acc, cnt = None, torch.zeros(ph, pw)
    for y in ys:
        for x0 in xs:
            out = torch.cat([model(xp[i : i + 1, :, y : y + wh, x0 : x0 + ww]) for i in range(b)])
            if acc is None:
                acc = torch.zeros(b, out.shape[1], ph, pw)
            acc[:, :, y : y + wh, x0 : x0 + ww] += out
            cnt[y : y + wh, x0 : x0 + ww] += 1
    return (acc / cnt)[:, :, :h, :w]


@pytest.mark.parametrize("size", [(20, 28), (12, 30), (16, 16)])
def test_sliding_window_matches_loop_reference(size: tuple[int, int]) -> None:
    model = TaskModel(encoder(), LinearSegmenter(32, 3)).eval()
    torch.nn.init.normal_(model.adaptor.conv.weight)
    x = torch.rand(2, 3, *size, generator=G)
    with torch.no_grad():
        got = SlidingWindow(model, window=16, stride=8)(x)
        want = _ref_sliding(model, x, 16, 16, 8, 8)
    assert got.shape == (2, 3, *size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if size == (16, 16):
        torch.testing.assert_close(got, model(x), atol=1e-5, rtol=1e-5)


def test_sliding_window_depth_layouts_and_one_forward() -> None:
    calls: list[int] = []

    def model(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.mean(1)  # (N, H, W) depth-like, pointwise

    x = torch.rand(3, 3, 10, 17, generator=G)
    out = sliding_window_inference(model, x, window=(8, 8), stride=(4, 6))
    assert out.shape == (3, 10, 17) and len(calls) == 1
    torch.testing.assert_close(out, x.mean(1))


def test_sliding_window_bad_inputs() -> None:
    model = TaskModel(encoder(), LinearSegmenter(32, 3))
    with pytest.raises(SSLRobustValueError, match="stride must not exceed"):
        SlidingWindow(model, window=16, stride=20)
    with pytest.raises(SSLRobustValueError, match="multiple of the encoder's patch size"):
        SlidingWindow(model, window=10, stride=5)
    with pytest.raises(SSLRobustValueError, match="window must be >= 1"):
        sliding_window_inference(model, torch.rand(1, 3, 8, 8), window=0, stride=1)
    with pytest.raises(SSLRobustValueError, match="needs a model returning"):
        sliding_window_inference(
            lambda x: x.mean((1, 2, 3)), torch.rand(1, 3, 8, 8), window=4, stride=4
        )


def test_feature_view_shares_weights_and_skips_norm() -> None:
    enc = encoder()
    view = feature_view(enc, output_norm=False)
    x = torch.rand(2, 3, 16, 16, generator=G)
    with torch.no_grad():
        raw = view(x)
        normed = enc(x)
        mid = feature_view(enc, output_layer=0)(x)
    assert enc.output_norm and not view.output_norm
    torch.testing.assert_close(enc.norm(raw.patches), normed.patches)
    assert not torch.allclose(mid.patches, normed.patches)
    assert view.blocks is enc.blocks
    with pytest.raises(SSLRobustValueError, match="output_layer"):
        feature_view(enc, output_layer=5)
    with pytest.raises(SSLRobustTypeError, match="feature_view needs"):
        feature_view(torch.nn.Linear(2, 2), output_layer=0)  # type: ignore[type-var]
