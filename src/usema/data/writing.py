"""Write a segmentation in its input's format, shape and geometry (the counterpart of `usema.data.io`'s
readers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usema.data.io import FORMAT_OF_SUFFIX, ImageGeometry, strip_suffix, suffix_of
from usema.errors import DataError
from usema.utils.atomic import atomic_path

# The suffix of each format a segmentation is written in (JPEG inputs get PNG: see write_segmentation).
SEGMENTATION_SUFFIX = {"nifti": ".nii.gz", "png": ".png", "tiff": ".tif", "bmp": ".bmp", "itk": ".mha"}


def segmentation_paths(path: str | Path, max_label: int | None) -> tuple[Path, ...]:
    """Where `write_segmentation` may write a segmentation asked for at `path` whose labels reach at most
    `max_label` (None: not known before predicting, as an instance map's): there, and as PNG where a BMP's
    8 bits may not hold the labels."""
    path = Path(path)
    if FORMAT_OF_SUFFIX.get(suffix_of(path)) == "bmp" and (max_label is None or max_label > 255):
        return path, path.with_name(strip_suffix(path) + SEGMENTATION_SUFFIX["png"])
    return (path,)


def write_segmentation(seg: np.ndarray, geometry: ImageGeometry, path: str | Path) -> Path:
    """Write a label map in the input's format with its shape and geometry (NIfTI affine and q/sform codes),
    atomically. The suffix is set to the format's (JPEG inputs get a lossless PNG). Returns the path
    written."""
    seg = np.asarray(seg)
    path = Path(path)
    if tuple(seg.shape) != geometry.shape:
        raise DataError(
            path, f"segmentation shape {list(seg.shape)} differs from the input's {list(geometry.shape)}"
        )
    if seg.size and seg.min() < 0:
        raise DataError(path, "segmentation has negative labels")
    peak = int(seg.max()) if seg.size else 0
    fmt = geometry.format
    if fmt == "jpeg" or (fmt == "bmp" and peak > 255):
        fmt = "png"  # JPEG is lossy and BMP holds 8 bits: PNG keeps every label exactly
    if FORMAT_OF_SUFFIX.get(suffix_of(path)) != fmt:
        path = path.with_name(strip_suffix(path) + SEGMENTATION_SUFFIX[fmt])
    dtype = np.uint8 if peak < 256 else np.uint16 if peak < 65536 else np.int32
    seg = seg.astype(dtype)
    with atomic_path(path) as tmp:
        if fmt == "nifti":
            _write_nifti(seg, geometry, tmp)
        elif fmt == "tiff":
            import tifffile

            tifffile.imwrite(tmp, seg)
        elif fmt == "itk":
            _write_itk(seg, geometry, tmp)
        else:
            from PIL import Image

            if dtype == np.int32:
                raise DataError(path, f"PNG labels hold at most 65535; this segmentation has {peak}")
            Image.fromarray(seg).save(tmp, format="BMP" if fmt == "bmp" else "PNG")
    return path


def _write_nifti(seg: np.ndarray, geometry: ImageGeometry, path: Path) -> None:
    import nibabel as nib

    if geometry.affine is None:
        affine = np.diag([*geometry.spacing, *([1.0] * (4 - len(geometry.spacing)))])
    else:
        affine = np.asarray(geometry.affine)
    img = nib.Nifti1Image(seg, affine)
    extra = geometry.extra
    if "qform_code" in extra:
        # Keep both of the input's orientation records, so viewers line the mask up with the image.
        img.set_qform(
            None if extra.get("qform") is None else np.asarray(extra["qform"]), int(extra["qform_code"])
        )
        img.set_sform(
            None if extra.get("sform") is None else np.asarray(extra["sform"]), int(extra["sform_code"])
        )
    img.header.set_zooms(geometry.spacing)
    nib.save(img, str(path))


def _write_itk(seg: np.ndarray, geometry: ImageGeometry, path: Path) -> None:
    import SimpleITK as sitk

    dims = seg.ndim
    img = sitk.GetImageFromArray(np.moveaxis(seg, list(range(dims)), list(range(dims))[::-1]))
    img.SetSpacing(geometry.spacing)
    if "origin" in geometry.extra:
        img.SetOrigin(geometry.extra["origin"])
        img.SetDirection(geometry.extra["direction"])
    sitk.WriteImage(img, str(path))
