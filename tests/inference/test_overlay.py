"""Overlay drawing: fill, outline and gray background values, the slice shown in 3D, and the written PNG."""

import numpy as np
from PIL import Image

from usema.data.io import ImageGeometry
from usema.inference.overlay import (
    FILL_ALPHA,
    PALETTE,
    axial_axis,
    display_plane,
    render_overlay,
    write_overlay,
)


def test_render_fills_outlines_and_keeps_the_background_gray():
    gray = np.tile(np.linspace(0, 100, 300, dtype=np.float32), (300, 1))  # wide enough: no enlargement
    labels = np.zeros((300, 300), dtype=np.int64)
    labels[100:200, 100:200] = 2

    rgb = render_overlay(gray, labels)

    assert rgb.shape == (300, 300, 3) and rgb.dtype == np.uint8
    low, high = np.percentile(gray, [0.5, 99.5])
    background = np.clip((gray[10, 150] - low) / (high - low), 0, 1) * 255
    np.testing.assert_array_equal(rgb[10, 150], np.round([background] * 3))
    inside = np.clip((gray[150, 150] - low) / (high - low), 0, 1) * 255
    expected = (1 - FILL_ALPHA) * inside + FILL_ALPHA * PALETTE[1]  # label 2 takes the second colour
    np.testing.assert_allclose(rgb[150, 150], expected, atol=1.0)
    np.testing.assert_array_equal(rgb[100, 150], np.round(PALETTE[1]))  # the outline, on the label's side
    np.testing.assert_array_equal(rgb[99, 150], rgb[99, 150, 0])  # just outside: still gray


def test_small_images_are_enlarged_by_a_whole_factor():
    labels = np.zeros((20, 50), dtype=np.int64)
    labels[5, 5] = 1
    rgb = render_overlay(np.zeros((20, 50), dtype=np.float32), labels)
    assert rgb.shape == (20 * 6, 50 * 6, 3)
    np.testing.assert_array_equal(rgb[30, 30], np.round(PALETTE[0]))  # the pixel became a 6x6 block: its rim
    np.testing.assert_allclose(rgb[32, 33], FILL_ALPHA * PALETTE[0], atol=1.0)  # and its filled middle
    assert np.all(rgb[36:, :] == 0)


def test_3d_shows_the_middle_axial_slice():
    volume = np.zeros((5, 6, 7), dtype=np.float32)
    volume[:, :, 3] = 1.0  # the middle slice along the last (axial) axis
    identity = ImageGeometry((5, 6, 7), (1, 1, 1), np.eye(4).tolist(), "nifti")
    gray, labels = display_plane(volume[None], (volume > 0).astype(np.int64), identity)
    assert gray.shape == (6, 5) and np.all(gray == 1) and np.all(labels == 1)

    # array axis 0 running inferior-superior: the axial slice is taken across axis 0
    permuted = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    assert axial_axis(ImageGeometry((5, 6, 7), (1, 1, 1), permuted.tolist(), "nifti")) == 0
    assert axial_axis(ImageGeometry((5, 6, 7), (1, 1, 1), None, "tiff")) == 0


def test_write_overlay_writes_an_rgb_png(tmp_path):
    image = np.random.default_rng(0).random((3, 40, 64)).astype(np.float32)
    labels = np.zeros((40, 64), dtype=np.int64)
    labels[10:20, 10:30] = 1
    path = write_overlay(
        image, labels, ImageGeometry((40, 64), (1, 1), None, "png"), tmp_path / "ov" / "x.png"
    )
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]
    with Image.open(path) as written:
        assert written.mode == "RGB" and written.size == (64 * 4, 40 * 4)
