"""A head built with the wrong class count is refused early, naming the ``info`` field to use."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ssl_robust import LinearClassifier, LinearSegmenter, TaskModel, fit
from ssl_robust.data import create_dataset
from ssl_robust.encoders import VisionTransformer


def _encoder() -> VisionTransformer:
    return VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)


def test_segmentation_head_from_num_classes_is_refused_before_any_batch() -> None:
    data = create_dataset("shapes", split="train", size=8, image_size=16, subset=4)
    assert data.info.num_classes == 4 and data.info.seg_classes == 5
    reads = []

    class Counting(torch.utils.data.Dataset):  # type: ignore[type-arg]
        info = data.info

        def __len__(self) -> int:
            return len(data)

        def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
            reads.append(i)
            return data[i]

    model = TaskModel(_encoder(), LinearSegmenter(16, data.info.num_classes))
    before = model.adaptor.state_dict()["conv.weight"].clone()
    with pytest.raises(ValueError) as err:
        fit(model, DataLoader(Counting(), batch_size=4), epochs=1, progress=False)
    msg = str(err.value)
    assert "LinearSegmenter has 4 classes" in msg and "labels up to 4" in msg
    assert "use `info.seg_classes`" in msg
    assert reads == []  # raised before reading data: not deep in the feature cache
    assert torch.equal(model.adaptor.state_dict()["conv.weight"], before)
    # the right count trains
    ok = TaskModel(_encoder(), LinearSegmenter(16, data.info.seg_classes))
    assert len(fit(ok, DataLoader(data, batch_size=4), epochs=1, progress=False)["loss"]) == 1


def test_hand_made_mask_batches_name_the_head_the_label_and_the_field() -> None:
    data = create_dataset("shapes", split="train", size=16, image_size=16)
    batch = next(iter(DataLoader(data, batch_size=16)))
    assert int(batch["mask"].max()) == 4
    model = TaskModel(_encoder(), LinearSegmenter(16, 4))
    with pytest.raises(ValueError) as err:
        fit(model, [(batch["image"], batch["mask"])], epochs=1, progress=False)
    assert str(err.value).startswith(
        "LinearSegmenter has 4 classes but the masks hold label 4; for segmentation use "
        "`info.seg_classes`"
    )


def test_a_classifier_with_too_few_classes_names_num_classes() -> None:
    data = create_dataset("shapes", split="train", size=8, image_size=16)
    model = TaskModel(_encoder(), LinearClassifier(16, 3))
    with pytest.raises(ValueError, match=r"LinearClassifier has 3 classes.*use `info.num_classes`"):
        fit(model, DataLoader(data, batch_size=4), epochs=1, progress=False)
    # more classes than the data holds is allowed (unused outputs)
    wide = TaskModel(_encoder(), LinearClassifier(16, 6))
    assert len(fit(wide, DataLoader(data, batch_size=4), epochs=1, progress=False)["loss"]) == 1


def test_evaluate_refuses_the_same_mistake_up_front_with_or_without_info() -> None:
    from ssl_robust import evaluate

    data = create_dataset("shapes", split="val", size=8, image_size=16)
    model = TaskModel(_encoder(), LinearSegmenter(16, data.info.num_classes)).eval()
    for info in (data.info, None):
        with pytest.raises(ValueError, match=r"LinearSegmenter has 4 classes.*`info.seg_classes`"):
            evaluate(model, DataLoader(data, batch_size=4), info=info)
    ok = TaskModel(_encoder(), LinearSegmenter(16, data.info.seg_classes)).eval()
    res = evaluate(ok, DataLoader(data, batch_size=4), info=data.info)
    assert 0.0 <= res.headline["model"]["clean"] <= 1.0


def test_check_head_classes_finds_the_info_through_wrappers() -> None:
    from ssl_robust.tasks import check_head_classes

    data = create_dataset("shapes", split="val", size=8, image_size=16, subset=4)
    wrapped = torch.utils.data.Subset(data, [0, 1])
    for source in (data, wrapped, DataLoader(wrapped, batch_size=2), data.info):
        with pytest.raises(ValueError, match=r"use `info\.seg_classes`"):
            check_head_classes(LinearSegmenter(16, 4), source)
        check_head_classes(LinearSegmenter(16, 5), source)
    check_head_classes(LinearSegmenter(16, 2), [(torch.rand(1, 3, 16, 16), None)])  # no info
