"""usema.data.writing: segmentations in their input's format (JPEG as PNG), refused when they do not fit it."""

import numpy as np
import pytest
from PIL import Image

from usema.data.io import ImageGeometry, read_image, read_label
from usema.data.writing import segmentation_paths, write_segmentation
from usema.errors import DataError


def test_jpeg_input_gets_a_png_segmentation(tmp_path):
    Image.fromarray(np.full((12, 9, 3), 100, dtype=np.uint8)).save(tmp_path / "photo.jpg")
    image, geometry = read_image(tmp_path / "photo.jpg")
    assert image.shape == (3, 12, 9) and geometry.format == "jpeg"
    path = write_segmentation(np.ones((12, 9), dtype=int), geometry, tmp_path / "photo.jpg")
    assert path.name == "photo.png"
    np.testing.assert_array_equal(read_label(path)[0], np.ones((12, 9)))


def test_write_refuses_a_wrong_shape(tmp_path):
    geometry = ImageGeometry((4, 5), (1.0, 1.0), None, "png")
    with pytest.raises(DataError, match="differs"):
        write_segmentation(np.zeros((5, 4), dtype=int), geometry, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_bmp_round_trip(tmp_path):
    Image.fromarray(np.full((7, 11), 40, dtype=np.uint8)).save(tmp_path / "scan.bmp")
    image, geometry = read_image(tmp_path / "scan.bmp")
    assert image.shape == (1, 7, 11) and geometry.format == "bmp"
    seg = np.eye(7, 11, dtype=np.int64) * 3
    path = write_segmentation(seg, geometry, tmp_path / "seg.bmp")
    assert path.suffix == ".bmp"
    np.testing.assert_array_equal(read_label(path)[0], seg)


def test_segmentation_paths_name_the_png_a_bmp_may_become(tmp_path):
    assert segmentation_paths(tmp_path / "a.bmp", max_label=255) == (tmp_path / "a.bmp",)
    assert segmentation_paths(tmp_path / "a.bmp", max_label=300) == (tmp_path / "a.bmp", tmp_path / "a.png")
    assert segmentation_paths(tmp_path / "a.bmp", max_label=None) == (tmp_path / "a.bmp", tmp_path / "a.png")
    assert segmentation_paths(tmp_path / "a.nii.gz", max_label=None) == (tmp_path / "a.nii.gz",)
