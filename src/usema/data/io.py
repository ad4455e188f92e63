"""Read images and labels of every supported format into arrays with their geometry (writing segmentations:
`usema.data.writing`).

Arrays are channel-first, spatial axes in the file's own array order: NIfTI (i, j, k) voxel order, 2D images
(rows, columns), ITK files (x, y, z) so that they match NIfTI. Readers are nibabel (NIfTI), Pillow (PNG, JPEG,
BMP), tifffile (TIFF) and, when installed, SimpleITK (MHA, MHD, NRRD). Every failure to read becomes a
DataError that names the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usema.errors import DataError
from usema.utils.atomic import atomic_path  # noqa: F401  (re-exported: the one atomic writer of the package)
from usema.utils.memory import physical_memory_bytes

# Longest first, so that ".nii.gz" wins over ".gz"-less ".nii" and friends.
FORMAT_OF_SUFFIX = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
    ".mha": "itk",
    ".mhd": "itk",
    ".nrrd": "itk",
    ".nhdr": "itk",
}
SUPPORTED_SUFFIXES = tuple(sorted(FORMAT_OF_SUFFIX, key=len, reverse=True))
# The suffix of a segmentation written in each format (JPEG inputs get PNG segmentations: JPEG is lossy).
_PILLOW_FORMATS = ("png", "jpeg", "bmp")
# Deflate expands a stream at most about 1032-fold (a long run of one byte value; gzip of zeros measures 1029),
# so a .nii.gz whose header declares more than this many times the file's size declares data it cannot hold.
MAX_GZIP_EXPANSION = 1100


@dataclass
class ImageGeometry:
    """Where an image's voxels lie: spatial shape, spacing (mm), affine (NIfTI only), file format, extras."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: list[list[float]] | None = None
    format: str = "nifti"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.spacing = tuple(float(s) for s in self.spacing)
        if self.affine is not None:
            self.affine = np.asarray(self.affine, dtype=float).tolist()

    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that `from_dict` turns back into an equal geometry."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "affine": self.affine,
            "format": self.format,
            "extra": _jsonable(self.extra),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageGeometry:
        """Inverse of `to_dict`."""
        return cls(
            shape=data["shape"],
            spacing=data["spacing"],
            affine=data.get("affine"),
            format=data.get("format", "nifti"),
            extra=dict(data.get("extra") or {}),
        )

    def agrees_with(self, other: ImageGeometry) -> str | None:
        """None when both describe the same voxel grid, else what differs (shape, spacing or affine)."""
        if self.shape != other.shape:
            return f"shape {list(self.shape)} differs from {list(other.shape)}"
        if not np.allclose(self.spacing, other.spacing, rtol=1e-3, atol=1e-5):
            return f"spacing {list(self.spacing)} differs from {list(other.spacing)}"
        if (
            self.affine is not None
            and other.affine is not None
            and not np.allclose(self.affine, other.affine, rtol=1e-4, atol=1e-3)
        ):
            mine, theirs = np.round(self.affine, 4).tolist(), np.round(other.affine, 4).tolist()
            return f"affine {mine} differs from {theirs}"
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def suffix_of(name: str | Path) -> str:
    """The supported suffix `name` ends with (lower case, ".nii.gz" aware), or "" if none."""
    lower = Path(name).name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if lower.endswith(s)), "")


def strip_suffix(name: str | Path) -> str:
    """File name without its image suffix: "case_001.nii.gz" -> "case_001"."""
    base = Path(name).name
    suffix = suffix_of(base)
    return base[: len(base) - len(suffix)] if suffix else Path(base).stem


def format_of(path: str | Path) -> str:
    """The format name of a path ("nifti", "png", ...); DataError when the suffix is not supported."""
    suffix = suffix_of(path)
    if not suffix:
        raise DataError(path, f"unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    return FORMAT_OF_SUFFIX[suffix]


def _unreadable(path: Path, exc: BaseException) -> DataError:
    return DataError(
        path,
        f"cannot read the file (unreadable, truncated or not a valid image): {type(exc).__name__}: {exc}",
    )


# ---------------------------------------------------------------------------------------------- raw readers
def _check_declared_size(path: Path, header: Any) -> None:
    """Refuse a NIfTI header that declares more voxel data than the file can hold, before any is read (a forged
    or corrupt header would otherwise make the reader allocate what it declares): an uncompressed file must hold
    offset + shape x dtype bytes; a gzipped one at most MAX_GZIP_EXPANSION times its size; and the image, read
    as float32, must fit in this machine's memory."""
    shape = [int(s) for s in header.get_data_shape()]
    dtype = header.get_data_dtype()
    declared = math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    what = f"the header declares {'x'.join(map(str, shape))} voxels of {dtype} ({declared / 2**20:.1f} MiB)"
    if path.name.lower().endswith(".gz"):
        if declared > MAX_GZIP_EXPANSION * size:
            raise DataError(path, f"{what}, more than a gzip file of {size} bytes can hold: a corrupt header")
    elif int(header.get_data_offset()) + declared > size:
        raise DataError(path, f"{what}, but the file holds {size} bytes: truncated, or a corrupt header")
    memory = physical_memory_bytes()
    if memory is not None and math.prod(shape) * max(dtype.itemsize, 4) > memory:
        raise DataError(path, f"{what}: more than this machine's {memory / 2**30:.1f} GiB of memory")


def _nifti_shape(path: Path, shape: Sequence[int]) -> tuple[int, ...]:
    """The array shape of a NIfTI image as read: (x, y, z, 1, c), NIfTI's vector-image layout, as (x, y, z, c);
    DataError unless 2D, 3D or 4D."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 4 and shape[3] == 1:
        shape = shape[:3] + shape[4:]
    if len(shape) not in (2, 3, 4):
        raise DataError(path, f"expected a 2D, 3D or 4D NIfTI image, found shape {list(shape)}")
    return shape


def _nifti_geometry(img: Any, shape: tuple[int, ...]) -> ImageGeometry:
    spatial = 3 if len(shape) == 4 else len(shape)
    header = img.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    extra = {
        "qform_code": int(qcode or 0),
        "sform_code": int(scode or 0),
        "qform": None if qform is None else qform.tolist(),
        "sform": None if sform is None else sform.tolist(),
    }
    return ImageGeometry(shape[:spatial], header.get_zooms()[:spatial], img.affine.tolist(), "nifti", extra)


def _read_nifti(path: Path) -> tuple[np.ndarray, ImageGeometry, bool]:
    """(array with spatial axes first, geometry, has trailing channel axis)."""
    import nibabel as nib

    img = nib.load(str(path))
    _check_declared_size(path, img.header)
    shape = _nifti_shape(path, img.shape)
    data = np.asanyarray(img.dataobj).reshape(shape)
    return data, _nifti_geometry(img, shape), data.ndim == 4


def _pillow_conversion(mode: str, as_label: bool) -> str | None:
    """The Pillow mode an image of `mode` is read as (None: as it is): gray with or without alpha as L, RGBA,
    CMYK, YCbCr, ... as their RGB colours without alpha; a palette label keeps its indices (its class ids)."""
    if mode in ("1", "LA", "La"):
        return "L"
    if mode == "P":
        return None if as_label else "RGB"
    if mode in ("L", "I", "F", "RGB") or mode.startswith("I;16"):
        return None
    return "RGB"


def _read_pillow(path: Path, as_label: bool) -> tuple[np.ndarray, ImageGeometry, bool]:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        target = _pillow_conversion(mode, as_label)
        data = np.array(im.convert(target) if target else im)
    if mode == "1":
        data = (data > 0).astype(np.uint8)
    geometry = ImageGeometry(data.shape[:2], (1.0, 1.0), None, format_of(path), {"mode": mode})
    return data, geometry, data.ndim == 3


def _tiff_layout(path: Path, shape: Sequence[int], photometric: Any) -> tuple[int, bool]:
    """(spatial axes, has trailing RGB channels) of a TIFF array of `shape`; DataError unless 2D or 3D."""
    import tifffile

    is_rgb = photometric == tifffile.PHOTOMETRIC.RGB and len(shape) >= 3 and shape[-1] in (3, 4)
    spatial = len(shape) - 1 if is_rgb else len(shape)
    if spatial not in (2, 3):
        raise DataError(path, f"expected a 2D or 3D TIFF, found shape {list(shape)}")
    return spatial, is_rgb


def _read_tiff(path: Path) -> tuple[np.ndarray, ImageGeometry, bool]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        photometric = tif.pages[0].photometric
    spatial, is_rgb = _tiff_layout(path, data.shape, photometric)
    if is_rgb:
        data = data[..., :3]
    geometry = ImageGeometry(
        data.shape[:spatial], (1.0,) * spatial, None, "tiff", {"photometric": str(photometric)}
    )
    return data, geometry, is_rgb


def _simpleitk(path: Path) -> Any:
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # optional dependency
        raise DataError(path, "reading this format needs SimpleITK (pip install usema[itk])") from exc
    return sitk


def _itk_geometry(image_or_reader: Any, shape: tuple[int, ...]) -> ImageGeometry:
    """Of a SimpleITK image or of an ImageFileReader that read the header (both name these getters alike)."""
    extra = {"origin": list(image_or_reader.GetOrigin()), "direction": list(image_or_reader.GetDirection())}
    return ImageGeometry(shape, image_or_reader.GetSpacing(), None, "itk", extra)


def _read_itk(path: Path) -> tuple[np.ndarray, ImageGeometry, bool]:
    sitk = _simpleitk(path)
    img = sitk.ReadImage(str(path))
    dims = img.GetDimension()
    # SimpleITK gives (z, y, x[, c]); reverse the spatial axes to (x, y, z) so spacing order matches NIfTI's.
    data = sitk.GetArrayFromImage(img)
    has_channels = img.GetNumberOfComponentsPerPixel() > 1
    data = np.moveaxis(data, list(range(dims)), list(range(dims))[::-1])
    return data, _itk_geometry(img, data.shape[:dims]), has_channels


def _read_raw(path: Path, as_label: bool = False) -> tuple[np.ndarray, ImageGeometry, bool]:
    """Any supported file -> (array, geometry, channels-last flag); every failure becomes a DataError."""
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        if fmt == "nifti":
            return _read_nifti(path)
        if fmt in _PILLOW_FORMATS:
            return _read_pillow(path, as_label)
        if fmt == "tiff":
            return _read_tiff(path)
        return _read_itk(path)
    except DataError:
        raise
    except Exception as exc:  # nibabel, Pillow, tifffile and zlib each raise their own types on corrupt files
        raise _unreadable(path, exc) from exc


# ---------------------------------------------------------------------------------------------- public API
def read_image(paths: Sequence[str | Path] | str | Path) -> tuple[np.ndarray, ImageGeometry]:
    """Read an image as float32 (C, *spatial): one file per channel, or one multi-channel file (RGB, 4D
    NIfTI).

    Raises DataError (naming the file) when a file cannot be read, channel files disagree in geometry, or
    intensities are NaN or infinite.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DataError(None, "read_image needs at least one file")
    channels: list[np.ndarray] = []
    geometry: ImageGeometry | None = None
    for path in map(Path, paths):
        data, geo, channels_last = _read_raw(path)
        data = np.moveaxis(data, -1, 0) if channels_last else data[None]
        data = data.astype(np.float32, copy=False)
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise DataError(path, f"{bad} NaN or infinite intensities")
        if geometry is None:
            geometry = geo
        else:
            _check_channel_grid(path, geo, Path(paths[0]), geometry)
        channels.append(data)
    assert geometry is not None
    return (channels[0] if len(channels) == 1 else np.concatenate(channels)), geometry


def read_label(path: str | Path) -> tuple[np.ndarray, ImageGeometry]:
    """Read a label map as int64 (*spatial). Float files holding whole numbers are cast; anything else
    (fractions, NaN, negative values, several differing channels) raises DataError."""
    path = Path(path)
    data, geometry, channels_last = _read_raw(path, as_label=True)
    if channels_last:
        channels = np.moveaxis(data, -1, 0)
        if not all(np.array_equal(channels[0], c) for c in channels[1:]):
            raise DataError(
                path, f"a label needs one channel; this file has {channels.shape[0]} differing ones"
            )
        data = channels[0]
    if not np.issubdtype(data.dtype, np.integer) and data.dtype != bool:
        if not np.all(np.isfinite(data)):
            raise DataError(path, "label contains NaN or infinite values")
        fractional = data[data != np.round(data)]
        if fractional.size:
            raise DataError(
                path,
                f"label values must be integers; found {fractional.size} non-integer values "
                f"such as {float(fractional.flat[0]):g}",
            )
    labels = data.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(path, f"label values must be >= 0; found {int(labels.min())}")
    return labels, geometry


def label_values(labels: np.ndarray) -> np.ndarray:
    """The distinct values of a non-negative integer label map, sorted (a bincount where the values are small:
    much faster than np.unique on a volume)."""
    labels = np.asarray(labels)
    if labels.size and labels.max() < 1 << 24:
        return np.flatnonzero(np.bincount(labels.ravel()))
    return np.unique(labels)


def probe_image(path: str | Path) -> tuple[int, ImageGeometry]:
    """(number of channels, geometry) from the file's header alone, as `read_image` would find them, without
    reading the voxels; DataError naming the file when it is missing, unreadable, or of a shape no reader takes.
    A NIfTI header that declares more data than the file holds fails here too; damage inside the voxel data
    shows only when the file is read."""
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        if fmt == "nifti":
            import nibabel as nib

            img = nib.load(str(path))
            _check_declared_size(path, img.header)
            shape = _nifti_shape(path, img.shape)
            return (shape[3] if len(shape) == 4 else 1), _nifti_geometry(img, shape)
        if fmt in _PILLOW_FORMATS:
            from PIL import Image

            with Image.open(path) as im:  # the header: size and mode, converted as _read_pillow reads them
                channels = 3 if (_pillow_conversion(im.mode, as_label=False) or im.mode) == "RGB" else 1
                return channels, ImageGeometry(
                    (im.height, im.width), (1.0, 1.0), None, fmt, {"mode": im.mode}
                )
        if fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape, photometric = tuple(tif.series[0].shape), tif.pages[0].photometric
            spatial, is_rgb = _tiff_layout(path, shape, photometric)
            geometry = ImageGeometry(
                shape[:spatial], (1.0,) * spatial, None, "tiff", {"photometric": str(photometric)}
            )
            return (3 if is_rgb else 1), geometry
        reader = _simpleitk(path).ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return reader.GetNumberOfComponents(), _itk_geometry(reader, tuple(reader.GetSize()))
    except DataError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def probe_images(paths: Sequence[str | Path]) -> tuple[int, ImageGeometry]:
    """(channels, geometry) of an image given as one file per channel (or one file), from the headers alone;
    DataError naming the file that cannot be read or whose grid differs from the first file's, as `read_image`
    would raise it."""
    if not paths:
        raise DataError(None, "probe_images needs at least one file")
    probes = [probe_image(path) for path in paths]
    geometry = probes[0][1]
    for path, (_, geo) in zip(paths[1:], probes[1:]):
        _check_channel_grid(Path(path), geo, Path(paths[0]), geometry)
    return sum(channels for channels, _ in probes), geometry


def _check_channel_grid(
    path: Path, geometry: ImageGeometry, first: Path, first_geometry: ImageGeometry
) -> None:
    problem = geometry.agrees_with(first_geometry)
    if problem:
        raise DataError(path, f"channel file geometry differs from {first.name}: {problem}")
