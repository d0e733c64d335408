"""``shapes``: synthetic scenes with a class label, a segmentation mask and a depth map.

Each image is a small perspective scene: a camera 1.5 m above a textured ground plane (a
checkerboard in world coordinates) that ends at a textured back wall 10 m away, and 1–3 flat,
upright shapes standing on the ground. Depth comes from the geometry: ground pixels at row y
lie at ``f · 1.5 / (y − horizon)`` metres (capped by the wall), shape pixels at the distance of
the shape. Farther shapes are smaller (size ``f · S / z``) and darker (colour × ``exp(−z/12)``).

Targets:
    - ``label``: the *kind* of the shape with the most visible pixels (the "main" object, drawn
      closest and largest) — 0 circle, 1 square, 2 triangle, 3 cross. Each kind has a home
      colour (red, green, blue, yellow) that it takes with probability ``home_colour`` (0.75),
      else one of the 5 other palette colours: colour is a strong but imperfect cue, so weak
      (even random) features give a linear head something to learn, and shape gives the rest.
    - ``mask``: 0 background (ground and wall), 1 + kind for shape pixels (5 classes).
    - ``depth``: metres in (0, 10], valid everywhere.

Samples are generated on the fly from their own ``torch.Generator`` seeded by (seed, split,
index): the dataset is deterministic, needs no files and never touches the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from .. import _checks
from .base import DatasetInfo, Sample, SampleDataset

__all__ = ["SHAPE_KINDS", "ShapesDataset", "render_shapes_scene"]

SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "cross")
_PALETTE = torch.tensor(
    [
        [0.90, 0.15, 0.15],  # red
        [0.15, 0.75, 0.20],  # green
        [0.20, 0.35, 0.95],  # blue
        [0.95, 0.85, 0.15],  # yellow
        [0.85, 0.25, 0.85],  # magenta
        [0.15, 0.85, 0.90],  # cyan
    ]
)
_CAM_HEIGHT = 1.5
_WALL = 10.0
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _shape_mask(kind: int, dx: Tensor, dy: Tensor, r: float) -> Tensor:
    """Pixels inside a shape of half-size r centred at (0, 0) (dx, dy in pixels)."""
    if kind == 0:  # circle
        return dx.square() + dy.square() <= r * r
    if kind == 1:  # square
        return (dx.abs() <= 0.85 * r) & (dy.abs() <= 0.85 * r)
    if kind == 2:  # triangle, apex up
        return (dy <= r) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.55)
    bar = 0.38 * r  # cross
    return ((dx.abs() <= bar) & (dy.abs() <= r)) | ((dy.abs() <= bar) & (dx.abs() <= r))


def render_shapes_scene(
    image_size: int | tuple[int, int],
    generator: torch.Generator,
    *,
    max_objects: int = 3,
    home_colour: float = 0.75,
    contrast: float = 1.0,
) -> Sample:
    """Render one scene (see the module docstring) with all randomness from ``generator``.

    Args:
        image_size: side, or (H, W), in pixels.
        generator: the only source of randomness.
        max_objects: at most this many shapes (at least 1).
        home_colour: probability that a shape takes its kind's own colour (red circles, green
            squares, blue triangles, yellow crosses); otherwise one of the other 5 colours.
        contrast: the image is blended towards mid-grey, ``0.5 + contrast * (image - 0.5)``
            (1: unchanged; lower values give hazy, low-contrast scenes whose features an
            attack budget moves further).

    Returns:
        A :class:`Sample` with ``image`` (3, H, W), ``label`` (), ``mask`` (H, W) and ``depth``
        (H, W).

    Example:
        >>> s = render_shapes_scene(32, torch.Generator().manual_seed(0))
        >>> s["image"].shape, s["mask"].shape, s["depth"].shape
        (torch.Size([3, 32, 32]), torch.Size([32, 32]), torch.Size([32, 32]))
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    g = generator
    f = 0.9 * w  # focal length in pixels (horizontal field of view ~58°)
    horizon = h * _uniform(g, 0.22, 0.4)
    ys = torch.arange(h, dtype=torch.float32).view(h, 1) + 0.5
    xs = torch.arange(w, dtype=torch.float32).view(1, w) + 0.5 - w / 2
    below = ys - horizon
    ground_z = torch.where(below > 0, f * _CAM_HEIGHT / below.clamp_min(1e-6), torch.inf)
    depth = ground_z.clamp(max=_WALL).expand(h, w).clone()
    on_ground = (ground_z < _WALL).expand(h, w)

    # Ground: checkerboard in world coordinates (X = x · z / f, Z = z), squares of `tile` metres.
    tile = _uniform(g, 0.7, 1.5)
    shift = _uniform(g, 0.0, 10.0)
    world_x = xs * depth / f + shift
    checker = ((torch.floor(world_x / tile) + torch.floor(depth / tile)) % 2).float()
    ground_rgb = torch.rand(2, 3, generator=g) * 0.35 + 0.25
    ground = ground_rgb[0].view(3, 1, 1) + checker * (ground_rgb[1] - ground_rgb[0]).view(3, 1, 1)
    # Wall: vertical stripes.
    stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * (xs / (w * _uniform(g, 0.08, 0.2))) + shift)
    wall_rgb = torch.rand(3, generator=g) * 0.3 + 0.45
    wall = wall_rgb.view(3, 1, 1) * (0.85 + 0.15 * stripes).expand(h, w)
    fog = torch.exp(-depth / 12.0)
    image = torch.where(on_ground, ground * fog, wall * fog)
    mask = torch.zeros(h, w, dtype=torch.int64)

    # Objects: the main one near and large, the others farther; painted far to near.
    n_obj = 1 + int(torch.randint(max_objects, (), generator=g))
    objects = []
    for i in range(n_obj):
        z = _uniform(g, 2.2, 3.6) if i == 0 else _uniform(g, 4.0, 8.5)
        size = _uniform(g, 0.55, 0.75) if i == 0 else _uniform(g, 0.35, 0.6)  # half-size, m
        lateral = _uniform(g, -0.25, 0.25) * z if i == 0 else _uniform(g, -0.45, 0.45) * z
        kind = int(torch.randint(len(SHAPE_KINDS), (), generator=g))
        colour = kind  # each kind has a home colour, used with probability home_colour
        if float(torch.rand((), generator=g)) >= home_colour:
            colour = (kind + 1 + int(torch.randint(len(_PALETTE) - 1, (), generator=g))) % len(
                _PALETTE
            )
        objects.append((z, size, lateral, kind, colour))
    owner = torch.full((h, w), -1, dtype=torch.int64)
    for idx, (z, size, lateral, kind, colour) in sorted(enumerate(objects), key=lambda t: -t[1][0]):
        r = f * size / z
        cx = f * lateral / z
        cy = horizon + f * _CAM_HEIGHT / z - r  # standing on the ground
        inside = _shape_mask(kind, xs - cx, ys - cy, r)
        shade = 0.8 + 0.2 * (ys - cy + r) / (2 * r)  # light from above: a vertical gradient
        rgb = _PALETTE[colour].view(3, 1, 1) * math.exp(-z / 12.0) * (1.1 - 0.2 * shade)
        image = torch.where(inside, rgb, image)
        depth = torch.where(inside, torch.tensor(z), depth)
        mask = torch.where(inside, torch.tensor(kind + 1), mask)
        owner = torch.where(inside, torch.tensor(idx), owner)
    counts = torch.bincount(owner.flatten() + 1, minlength=n_obj + 1)[1:]
    main = int(counts.argmax())
    noise = (torch.rand(3, h, w, generator=g) - 0.5) * 0.06
    image = (image + noise).clamp(0.0, 1.0)
    if contrast != 1.0:
        image = 0.5 + contrast * (image - 0.5)
    return Sample(
        image=image.float(),
        label=torch.tensor(objects[main][3], dtype=torch.int64),
        mask=mask,
        depth=depth.float(),
    )


class ShapesDataset(SampleDataset):
    """The synthetic ``shapes`` dataset (classification, segmentation and depth at once).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``: disjoint seed streams.
        size: number of samples.
        image_size: side in pixels (or (H, W)).
        seed: base seed; sample i of a split is rendered from ``(seed, split, i)``
            (``create_dataset("shapes", scene_seed=...)``; its ``seed`` draws subsets).
        max_objects: at most this many shapes per scene.
        home_colour: probability that a shape has its kind's own colour.
        contrast: blend towards mid-grey (1: unchanged), see :func:`render_shapes_scene`.
        transform: optional joint transform applied to each sample.

    Example:
        >>> ds = ShapesDataset(split="val", size=4, image_size=32)
        >>> sample = ds[0]
        >>> sorted(sample), ds.info.num_classes, ds.info.seg_classes
        (['depth', 'image', 'label', 'mask'], 4, 5)
    """

    def __init__(
        self,
        *,
        split: Literal["train", "val", "test"] = "train",
        size: int = 1000,
        image_size: int | tuple[int, int] = 32,
        seed: int = 0,
        max_objects: int = 3,
        home_colour: float = 0.75,
        contrast: float = 1.0,
        transform: Callable[[Sample], Sample] | None = None,
    ) -> None:
        super().__init__(transform=transform)
        self.split = _checks.check_choice("split", split, tuple(_SPLIT_OFFSET))
        self.size = _checks.check_int("size", size, minimum=1)
        sides = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(sides) != 2:
            raise _checks.SSLRobustValueError(
                f"image_size must be an int or (H, W); got {image_size!r}"
            )
        for side in sides:
            _checks.check_int("image_size", side, minimum=8)
        self.image_size = (int(sides[0]), int(sides[1]))
        self.seed = _checks.check_int("seed", seed, minimum=0)
        self.max_objects = _checks.check_int("max_objects", max_objects, minimum=1)
        self.home_colour = _checks.check_positive_float("home_colour", home_colour, allow_zero=True)
        if self.home_colour > 1:
            raise _checks.SSLRobustValueError(f"home_colour must be in [0, 1]; got {home_colour}")
        self.contrast = _checks.check_positive_float("contrast", contrast)
        if self.contrast > 1:
            raise _checks.SSLRobustValueError(f"contrast must be in (0, 1]; got {contrast}")
        self.info = DatasetInfo(
            name="shapes",
            tasks=("classification", "segmentation", "depth"),
            num_classes=len(SHAPE_KINDS),
            seg_classes=len(SHAPE_KINDS) + 1,
            min_depth=1e-3,
            max_depth=_WALL,
            class_names=SHAPE_KINDS,
        )

    def __len__(self) -> int:
        return self.size

    def _load(self, index: int) -> Sample:
        stream = (self.seed * 3 + _SPLIT_OFFSET[self.split]) * 1_000_003 + index
        g = torch.Generator().manual_seed(stream)
        return render_shapes_scene(
            self.image_size,
            g,
            max_objects=self.max_objects,
            home_colour=self.home_colour,
            contrast=self.contrast,
        )
