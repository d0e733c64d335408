"""Datasets: a registry of real datasets, joint transforms and the synthetic ``shapes`` data."""

from .base import (
    DatasetInfo,
    DepthMap,
    IndexedSubset,
    Sample,
    SampleDataset,
    Task,
    as_tv_tensors,
    subset_indices,
)
from .batches import unpack_batch
from .datasets import ADE20K, CIFAR, STL10, Cityscapes, ImageNet, NYUDepthV2, VOCSegmentation
from .registry import (
    DatasetEntry,
    create_dataset,
    dataset_entry,
    dataset_origin,
    list_datasets,
    register_dataset,
)
from .shapes import SHAPE_KINDS, ShapesDataset, render_shapes_scene
from .transforms import PadIfSmaller, Seeded, eval_transform, train_transform

__all__ = [
    "ADE20K",
    "CIFAR",
    "SHAPE_KINDS",
    "STL10",
    "Cityscapes",
    "DatasetEntry",
    "DatasetInfo",
    "DepthMap",
    "ImageNet",
    "IndexedSubset",
    "NYUDepthV2",
    "PadIfSmaller",
    "Sample",
    "SampleDataset",
    "Seeded",
    "ShapesDataset",
    "Task",
    "VOCSegmentation",
    "as_tv_tensors",
    "create_dataset",
    "dataset_entry",
    "dataset_origin",
    "eval_transform",
    "list_datasets",
    "register_dataset",
    "render_shapes_scene",
    "subset_indices",
    "train_transform",
    "unpack_batch",
]
