"""Multi-block features (n_last_blocks), checkpoint_path= / weights=, timm and hf by name."""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import tiny_vit

from ssl_robust import SSLRobustValueError
from ssl_robust.adaptors import LinearClassifier, LinearDepther, LinearSegmenter, TaskModel
from ssl_robust.encoders import (
    Encoder,
    VisionTransformer,
    WeightsDownloadError,
    create_encoder,
    wrap,
)


def _x(size: int = 16) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def _view(vit: VisionTransformer, **attrs: object) -> VisionTransformer:
    view = copy.copy(vit)
    view.__dict__.update(attrs)
    return view


def test_n_last_blocks_concatenates_each_blocks_normed_tokens() -> None:
    torch.manual_seed(0)
    vit = tiny_vit(0, depth=3).eval()
    multi = tiny_vit(1, depth=3, n_last_blocks=2).eval()
    multi.load_state_dict(vit.state_dict())  # no new parameters: official checkpoints load
    x = _x()
    out = multi(x)
    parts = [_view(vit, output_layer=k)(x) for k in (1, 2)]  # earliest first
    torch.testing.assert_close(out.cls, torch.cat([p.cls for p in parts], -1))
    torch.testing.assert_close(out.patches, torch.cat([p.patches for p in parts], -1))
    assert multi.embed_dim == 64 and multi.token_dim == 32 and out.grid == (4, 4)
    raw = tiny_vit(1, depth=3, n_last_blocks=2, output_norm=False).eval()
    raw.load_state_dict(vit.state_dict())
    un = [_view(vit, output_layer=k, output_norm=False)(x) for k in (1, 2)]
    torch.testing.assert_close(raw(x).patches, torch.cat([p.patches for p in un], -1))


def test_n_last_blocks_ending_at_output_layer_and_span_errors() -> None:
    vit = tiny_vit(0, depth=3).eval()
    early = tiny_vit(0, depth=3, n_last_blocks=2, output_layer=1).eval()
    early.load_state_dict(vit.state_dict())
    x = _x()
    want = torch.cat([_view(vit, output_layer=k)(x).cls for k in (0, 1)], -1)
    torch.testing.assert_close(early(x).cls, want)
    with pytest.raises(SSLRobustValueError, match="n_last_blocks=3 blocks ending at"):
        tiny_vit(0, depth=2, n_last_blocks=3)
    with pytest.raises(SSLRobustValueError, match="n_last_blocks must be"):
        tiny_vit(0, n_last_blocks=0)


@pytest.mark.parametrize("make_encoder", ["builtin", "create", "timm", "hf"])
def test_every_head_fits_a_multi_block_encoder(make_encoder: str) -> None:
    torch.manual_seed(0)
    enc: Encoder
    if make_encoder == "builtin":
        enc = tiny_vit(0, n_last_blocks=2).eval()
    elif make_encoder == "create":
        enc = create_encoder("vit_test", n_last_blocks=2)
    elif make_encoder == "timm":
        timm = pytest.importorskip("timm")
        model = timm.models.vision_transformer.VisionTransformer(
            img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=0
        )
        enc = wrap(model.eval(), n_last_blocks=2)
    else:
        transformers = pytest.importorskip("transformers")
        cfg = transformers.Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=4,
            image_size=16,
        )  # fmt: skip
        enc = wrap(transformers.Dinov2Model(cfg).eval(), n_last_blocks=2)
    assert enc.embed_dim == 64
    x = _x()
    heads = {
        "cls": (LinearClassifier(enc.embed_dim, 3), (2, 3)),
        "seg": (LinearSegmenter(enc.embed_dim, 4), (2, 4, 16, 16)),
        "depth": (LinearDepther(enc.embed_dim, bins=8), (2, 1, 16, 16)),
    }
    for head, shape in heads.values():
        out = TaskModel(enc, head).eval()(x)
        assert tuple(out.shape) == shape


@pytest.mark.parametrize("kind", ["timm", "hf"])
def test_wrapped_multi_block_last_slice_is_the_single_block_output(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "timm":
        timm = pytest.importorskip("timm")
        model = timm.models.vision_transformer.VisionTransformer(
            img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2, num_classes=0,
            reg_tokens=1,
        ).eval()  # fmt: skip
    else:
        transformers = pytest.importorskip("transformers")
        cfg = transformers.Dinov2WithRegistersConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=2, patch_size=4,
            image_size=16, num_register_tokens=2,
        )  # fmt: skip
        model = transformers.Dinov2WithRegistersModel(cfg).eval()
    one, three = wrap(model), wrap(model, n_last_blocks=3)
    x = _x()
    a, b = one(x), three(x)
    assert b.patches.shape == (2, 16, 96) and b.cls.shape == (2, 96)
    torch.testing.assert_close(b.patches[..., 64:], a.patches, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.cls[..., 64:], a.cls, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(b.patches[..., :32], a.patches)  # an earlier block


def test_multi_block_refused_for_a_plain_callable() -> None:
    def tokens(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 5, 8)

    with pytest.raises(SSLRobustValueError, match="n_last_blocks > 1 needs a model"):
        wrap(tokens, embed_dim=8, patch_size=8, n_last_blocks=2)


def test_checkpoint_path_and_deprecated_weights(tmp_path: Path) -> None:
    src = create_encoder("vit_test")
    torch.nn.init.normal_(src.norm.weight)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    new = create_encoder("vit_test", checkpoint_path=tmp_path / "w.pth")
    with pytest.warns(FutureWarning, match="use create_encoder\\(..., checkpoint_path=PATH\\)"):
        old = create_encoder("vit_test", weights=tmp_path / "w.pth")
    for a, b in zip(new.state_dict().values(), old.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(new.norm.weight, src.norm.weight)
    with pytest.raises(SSLRobustValueError, match="not both"):
        create_encoder("vit_test", weights=tmp_path / "w.pth", checkpoint_path=tmp_path / "w.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_encoder("vit_test", checkpoint_path=tmp_path / "w.pth")  # no warning


@pytest.mark.parametrize(
    ("hub_name", "builtin"),
    [
        ("timm/vit_small_patch14_dinov2.lvd142m", "dinov2_vits14"),
        ("hf/facebook/dinov2-small", "dinov2_vits14"),
        ("hf/facebook/dinov2-with-registers-small", "dinov2_vits14_reg"),
        ("hf/facebook/dino-vits16", "dino_vits16"),
    ],
)
def test_hub_names_build_random_models_offline_with_the_builtin_shapes(
    hub_name: str, builtin: str
) -> None:
    pytest.importorskip(hub_name.split("/")[0].replace("hf", "transformers"))
    torch.manual_seed(0)
    extra = {"img_size": 28} if hub_name.startswith("timm/") else {}
    enc = create_encoder(hub_name, **extra)
    ref = create_encoder(builtin)
    x = _x(28 if "dinov2" in hub_name else 32)
    out, want = enc(x), ref(x)
    assert isinstance(enc, Encoder) and not enc.training
    assert out.cls.shape == want.cls.shape and out.patches.shape == want.patches.shape
    assert out.grid == want.grid and enc.embed_dim == ref.embed_dim
    assert enc.patch_size == ref.patch_size


def test_hub_name_with_n_last_blocks() -> None:
    pytest.importorskip("transformers")
    enc = create_encoder("hf/facebook/dinov2-small", n_last_blocks=4)
    assert enc.embed_dim == 4 * 384
    assert enc(_x(28)).patches.shape == (2, 4, 4 * 384)


def test_hub_name_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    timm = pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")
    with pytest.raises(SSLRobustValueError, match="timm has no model 'not_a_model'"):
        create_encoder("timm/not_a_model")
    with pytest.raises(SSLRobustValueError, match="no offline architecture"):
        create_encoder("hf/someone/unknown-model")
    with pytest.raises(SSLRobustValueError, match="names no model"):
        create_encoder("hf/")
    with pytest.raises(TypeError, match="img_size"):
        create_encoder("hf/facebook/dinov2-small", img_size=28)

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co'\nsecond line")

    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    for name in ("timm/vit_small_patch14_dinov2.lvd142m", "hf/facebook/dinov2-small"):
        with pytest.raises(WeightsDownloadError) as info:
            create_encoder(name, pretrained=True)
        message = str(info.value)
        assert "\n" not in message and "couldn't connect" in message
        assert "pretrained=False" in message


@pytest.mark.parametrize(
    ("build", "module"),
    [
        (lambda: create_encoder("timm/vit_small_patch14_dinov2.lvd142m"), "timm"),
        (lambda: create_encoder("hf/facebook/dinov2-small"), "transformers"),
        (lambda: wrap("timm:vit_small_patch16_224"), "timm"),
    ],
)
def test_a_missing_optional_library_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, build: Callable[[], object], module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=rf"pip install ssl-robust\[{module}\]"):
        build()
