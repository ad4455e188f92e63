"""Readers of usema.data.io: round trips through usema.data.writing keep shape and geometry; bad files raise
DataError."""

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from usema.data.io import (
    ImageGeometry,
    atomic_path,
    format_of,
    probe_image,
    probe_images,
    read_image,
    read_label,
    strip_suffix,
)
from usema.data.writing import write_segmentation
from usema.errors import DataError


def _oblique_affine() -> np.ndarray:
    """A rotated, anisotropic, translated affine: spacing 0.7 x 0.8 x 2.5 mm."""
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = [-12.5, 30.0, 4.0]
    return affine


def _save_nifti(path, data, affine=None, qform_code=1, sform_code=2):
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    img.set_qform(img.affine, qform_code)
    img.set_sform(img.affine, sform_code)
    nib.save(img, str(path))
    return path


def test_suffixes_and_stems():
    assert strip_suffix("case_001.nii.gz") == "case_001"
    assert strip_suffix("a.b.PNG") == "a.b"
    assert format_of("x/y.NII.GZ") == "nifti"
    assert format_of("scan.tiff") == "tiff"
    with pytest.raises(DataError, match="unsupported"):
        format_of("notes.txt")


def test_nifti_round_trip_keeps_affine_shape_and_codes(tmp_path):
    affine = _oblique_affine()
    data = np.random.default_rng(0).normal(size=(6, 7, 5)).astype(np.float32)
    path = _save_nifti(tmp_path / "img.nii.gz", data, affine, qform_code=1, sform_code=2)
    image, geometry = read_image([path])
    assert image.shape == (1, 6, 7, 5) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], data)
    np.testing.assert_allclose(geometry.spacing, [0.7, 0.8, 2.5], rtol=1e-5)
    np.testing.assert_allclose(geometry.affine, affine, atol=1e-5)

    restored = ImageGeometry.from_dict(json.loads(json.dumps(geometry.to_dict())))
    seg = (np.arange(6 * 7 * 5).reshape(6, 7, 5) % 3).astype(np.int64)
    written = write_segmentation(seg, restored, tmp_path / "out" / "seg.nii.gz")
    assert written == tmp_path / "out" / "seg.nii.gz"
    out = nib.load(str(written))
    assert out.shape == (6, 7, 5)
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    np.testing.assert_array_equal(np.asarray(out.dataobj), seg)
    assert [p.name for p in written.parent.iterdir()] == ["seg.nii.gz"]  # no temporary file left behind


def test_4d_nifti_becomes_channels_and_channel_files_concatenate(tmp_path):
    data = np.random.default_rng(1).normal(size=(4, 5, 3, 2)).astype(np.float32)
    image, geometry = read_image(_save_nifti(tmp_path / "multi.nii.gz", data))
    assert image.shape == (2, 4, 5, 3) and geometry.shape == (4, 5, 3)
    np.testing.assert_allclose(image[1], data[..., 1])
    a = _save_nifti(tmp_path / "c_0000.nii.gz", data[..., 0])
    b = _save_nifti(tmp_path / "c_0001.nii.gz", data[..., 1])
    stacked, _ = read_image([a, b])
    np.testing.assert_allclose(stacked, image)


def test_png_gray_rgb_and_16_bit(tmp_path):
    gray = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgb = np.stack([gray, gray // 2, 255 - gray], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    image, geometry = read_image(tmp_path / "gray.png")
    assert image.shape == (1, 30, 40) and geometry.shape == (30, 40) and geometry.format == "png"
    image, _ = read_image(tmp_path / "rgb.png")
    assert image.shape == (3, 30, 40)
    np.testing.assert_array_equal(image[2], 255 - gray)
    assert probe_image(tmp_path / "rgb.png")[0] == 3

    seg = np.zeros((30, 40), dtype=np.int64)
    seg[5:10, 5:20] = 2
    path = write_segmentation(seg, geometry, tmp_path / "seg.png")
    with Image.open(path) as written:
        assert written.size == (40, 30) and written.mode == "L"
    np.testing.assert_array_equal(read_label(path)[0], seg)

    seg[0, 0] = 300  # beyond 8 bits: written as 16-bit PNG
    path = write_segmentation(seg, geometry, tmp_path / "seg16.png")
    with Image.open(path) as written:
        assert written.mode.startswith("I")
    np.testing.assert_array_equal(read_label(path)[0], seg)


def test_tiff_gray_rgb_and_segmentation(tmp_path):
    gray = np.random.default_rng(2).integers(0, 4000, (16, 20)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", gray)
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((16, 20, 3), dtype=np.uint8), photometric="rgb")
    image, geometry = read_image(tmp_path / "g.tif")
    assert image.shape == (1, 16, 20) and geometry.format == "tiff"
    np.testing.assert_array_equal(image[0], gray)
    assert read_image(tmp_path / "c.tif")[0].shape == (3, 16, 20)
    path = write_segmentation(gray % 5, geometry, tmp_path / "seg.tif")
    np.testing.assert_array_equal(tifffile.imread(path), gray % 5)


def test_label_floats_holding_integers_are_cast(tmp_path):
    path = _save_nifti(tmp_path / "lab.nii.gz", np.array([[[0.0, 1.0], [2.0, 1.0]]], dtype=np.float32))
    label, _ = read_label(path)
    assert label.dtype == np.int64
    np.testing.assert_array_equal(label, [[[0, 1], [2, 1]]])


@pytest.mark.parametrize(
    ("values", "problem"),
    [([0.0, 0.5], "integers"), ([0.0, np.nan], "NaN"), ([0.0, -1.0], ">= 0")],
)
def test_bad_label_values_raise(tmp_path, values, problem):
    path = _save_nifti(tmp_path / "bad_label.nii.gz", np.array(values, dtype=np.float32).reshape(1, 1, 2))
    with pytest.raises(DataError, match=problem) as err:
        read_label(path)
    assert "bad_label.nii.gz" in str(err.value)


def test_nan_and_infinite_intensities_raise(tmp_path):
    data = np.ones((3, 3, 3), dtype=np.float32)
    data[1, 1, 1] = np.inf
    data[0, 0, 0] = np.nan
    path = _save_nifti(tmp_path / "nan_image.nii.gz", data)
    with pytest.raises(DataError, match="2 NaN or infinite") as err:
        read_image(path)
    assert "nan_image.nii.gz" in str(err.value)


def test_truncated_and_garbage_files_raise(tmp_path):
    good = _save_nifti(tmp_path / "good.nii.gz", np.zeros((20, 20, 20), dtype=np.float32))
    raw = gzip.decompress(good.read_bytes())
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    png = tmp_path / "truncated.png"
    Image.fromarray(np.zeros((50, 50), dtype=np.uint8)).save(png)
    png.write_bytes(png.read_bytes()[:60])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    for path in (truncated, png, garbage):
        with pytest.raises(DataError, match="cannot read") as err:
            read_image(path)
        assert path.name in str(err.value)
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "absent.nii.gz")


def test_channel_files_with_different_geometry_raise(tmp_path):
    a = _save_nifti(tmp_path / "c_0000.nii.gz", np.zeros((4, 4, 4), dtype=np.float32))
    b = _save_nifti(
        tmp_path / "c_0001.nii.gz", np.zeros((4, 4, 4), dtype=np.float32), np.diag([2.0, 1, 1, 1])
    )
    with pytest.raises(DataError, match="spacing") as err:
        read_image([a, b])
    assert "c_0001.nii.gz" in str(err.value)


def test_atomic_path_leaves_nothing_on_failure_and_replaces_on_success(tmp_path):
    target = tmp_path / "plans.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["plans.json"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_itk_files_keep_spacing_origin_and_axis_order(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    data = np.random.default_rng(3).normal(size=(5, 6, 7)).astype(np.float32)  # SimpleITK order: z, y, x
    img = sitk.GetImageFromArray(data)
    img.SetSpacing((0.5, 0.75, 2.0))
    img.SetOrigin((10.0, -4.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "vol.mha"))
    image, geometry = read_image(tmp_path / "vol.mha")
    assert image.shape == (1, 7, 6, 5) and geometry.spacing == (0.5, 0.75, 2.0)  # x, y, z as NIfTI
    np.testing.assert_allclose(image[0], data.transpose(2, 1, 0))
    seg = (image[0] > 0).astype(np.int64)
    path = write_segmentation(seg, ImageGeometry.from_dict(geometry.to_dict()), tmp_path / "seg.mha")
    back = sitk.ReadImage(str(path))
    assert back.GetSpacing() == (0.5, 0.75, 2.0) and back.GetOrigin() == (10.0, -4.0, 3.0)
    np.testing.assert_array_equal(read_label(path)[0], seg)


def _forge_nifti_shape(path, shape):
    """Rewrite the header of the NIfTI file at `path` to declare `shape`, keeping its (small) data."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    header = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(raw))
    header.set_data_shape(shape)
    with opener(path, "wb") as handle:
        handle.write(header.binaryblock + raw[len(header.binaryblock) :])
    return path


@pytest.mark.parametrize(
    ("name", "data_shape", "declared", "problem"),
    [
        ("huge.nii", (64, 64, 128), (800, 800, 800), r"the file holds 1048928 bytes"),  # a 1 MB file
        ("huge.nii.gz", (8, 8, 8), (200, 200, 200), "more than a gzip file of"),
    ],
)
def test_a_header_declaring_more_than_the_file_holds_is_refused_before_reading(
    tmp_path, name, data_shape, declared, problem
):
    import tracemalloc

    path = _forge_nifti_shape(_save_nifti(tmp_path / name, np.ones(data_shape, np.int16)), declared)
    shape_text = "x".join(map(str, declared))
    tracemalloc.start()
    try:
        for read in (read_image, probe_image):  # probe_image, which predict's check of its inputs uses
            with pytest.raises(
                DataError, match=rf"{name}: the header declares {shape_text} voxels of int16 .*{problem}"
            ):
                read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # nothing near the declared size was allocated


def test_a_well_compressed_but_honest_nifti_is_read(tmp_path):
    path = _save_nifti(tmp_path / "empty_label.nii.gz", np.zeros((96, 96, 96), np.uint8))
    assert read_label(path)[0].shape == (96, 96, 96)


def _probe_cases(tmp_path):
    """One file of every reader's kinds, as (path, expected channel count)."""
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(4)
    cases = [
        (_save_nifti(tmp_path / "vol.nii.gz", rng.normal(size=(6, 7, 5))), 1),
        (_save_nifti(tmp_path / "multi.nii.gz", rng.normal(size=(6, 7, 5, 2))), 2),
        (_save_nifti(tmp_path / "vector.nii.gz", rng.normal(size=(6, 7, 5, 1, 3))), 3),
        (_save_nifti(tmp_path / "flat.nii.gz", rng.normal(size=(6, 7))), 1),
    ]
    Image.fromarray(rng.integers(0, 255, (9, 11, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (9, 11), dtype=np.uint8)).convert("P").save(tmp_path / "p.png")
    gray = rng.integers(0, 255, (9, 11), dtype=np.uint8)
    Image.fromarray(gray).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(gray.astype(np.uint16) * 200).save(tmp_path / "deep.png")
    Image.fromarray(gray).save(tmp_path / "gray.jpg")
    Image.fromarray(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    cases += [(tmp_path / "a.png", 3), (tmp_path / "p.png", 3), (tmp_path / "la.png", 1), (tmp_path / "deep.png", 1)]
    cases += [(tmp_path / "gray.jpg", 1), (tmp_path / "cmyk.jpg", 3)]
    tifffile.imwrite(tmp_path / "rgb.tif", rng.integers(0, 255, (8, 10, 3), dtype=np.uint8), photometric="rgb")
    tifffile.imwrite(
        tmp_path / "stack.tif", rng.integers(0, 255, (4, 8, 10), dtype=np.uint16), photometric="minisblack"
    )
    cases += [(tmp_path / "rgb.tif", 3), (tmp_path / "stack.tif", 1)]
    img = sitk.GetImageFromArray(rng.normal(size=(5, 6, 7)).astype(np.float32))
    img.SetSpacing((0.5, 0.75, 2.0))
    sitk.WriteImage(img, str(tmp_path / "vol.mha"))
    vector = sitk.GetImageFromArray(rng.normal(size=(6, 7, 2)).astype(np.float32), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "vector.mha"))
    return cases + [(tmp_path / "vol.mha", 1), (tmp_path / "vector.mha", 2)]


def test_probe_image_finds_what_read_image_reads_from_the_header_alone(tmp_path):
    for path, channels in _probe_cases(tmp_path):
        image, geometry = read_image(path)
        probed_channels, probed = probe_image(path)
        assert (probed_channels, image.shape[0]) == (channels, channels), path.name
        assert probed.agrees_with(geometry) is None and probed.format == geometry.format, path.name
        assert probed.shape == geometry.shape == image.shape[1:], path.name


def test_probe_images_checks_channel_files_as_read_image_does(tmp_path):
    first = _save_nifti(tmp_path / "c_0000.nii.gz", np.zeros((6, 7, 5)))
    second = _save_nifti(tmp_path / "c_0001.nii.gz", np.ones((6, 7, 5)))
    assert probe_images([first, second])[0] == 2 and probe_images([first, second])[1].shape == (6, 7, 5)
    other = _save_nifti(tmp_path / "d_0001.nii.gz", np.ones((6, 7, 4)))
    for check in (read_image, probe_images):
        with pytest.raises(DataError, match=r"d_0001\.nii\.gz: channel file geometry differs from c_0000"):
            check([first, other])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png at all")
    with pytest.raises(DataError, match=r"broken\.png: cannot read the file"):
        probe_image(tmp_path / "broken.png")
