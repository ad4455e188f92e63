"""Generated phantom datasets for the demo and tests: no download, deterministic by seed, quick to learn.

Each case holds an ellipsoid (class 1) at a random position, size and rotation, and a smaller round blob
(class 2) on its surface, touching it, with its own mean intensity and texture; then a smooth multiplicative
intensity bias and Gaussian noise. 3D phantoms are an MSD-style folder of NIfTI files (1 mm spacing, identity
orientation); 2D phantoms are an images/ + labels/ folder of PNG files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from usema.errors import DataError

DEFAULT_SHAPES = {2: (96, 96), 3: (32, 40, 32)}
PHANTOM_LABELS = {0: "background", 1: "ellipsoid", 2: "blob"}
MARKER = "phantoms.json"
_GENERATOR_VERSION = 1
# Mean intensities (before bias and noise) of background, ellipsoid and blob; texture amplitude and grain.
_MEANS = (0.0, 1.0, 2.2)
_TEXTURE = {1: (0.1, 2.0), 2: (0.35, 0.7)}
_NOISE_STD = 0.15


def _random_rotation(dims: int, rng: np.random.Generator) -> np.ndarray:
    if dims == 2:
        angle = rng.uniform(0, np.pi)
        return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _texture(shape: tuple[int, ...], amplitude: float, grain: float, rng: np.random.Generator) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), grain)
    return amplitude * field / max(float(field.std()), 1e-8)


def phantom_case(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: (image float32 (*shape), label uint8 (*shape) with classes 0, 1, 2)."""
    dims, size = len(shape), np.asarray(shape, dtype=float)
    grid = np.indices(shape, dtype=float).reshape(dims, -1)
    radii = rng.uniform(0.2, 0.3, dims) * size
    centre = rng.uniform(0.4, 0.6, dims) * size
    rotation = _random_rotation(dims, rng)
    local = rotation.T @ (grid - centre[:, None])
    ellipsoid = ((local / radii[:, None]) ** 2).sum(axis=0) <= 1.0
    # The blob sits on the ellipsoid's surface in a random direction, its centre just outside, so they touch.
    direction = rng.normal(size=dims)
    direction /= np.linalg.norm(direction)
    surface = direction / np.sqrt(((direction / radii) ** 2).sum())
    blob_radius = rng.uniform(0.6, 0.75) * radii.min()
    blob_centre = centre + rotation @ (surface + 0.4 * blob_radius * direction)
    blob = ((grid - blob_centre[:, None]) ** 2).sum(axis=0) <= blob_radius**2
    label = np.zeros(grid.shape[1], dtype=np.uint8)
    label[ellipsoid] = 1
    label[blob] = 2
    label = label.reshape(shape)

    image = np.choose(label, _MEANS).astype(float)
    for k, (amplitude, grain) in _TEXTURE.items():
        image += np.where(label == k, _texture(shape, amplitude, grain, rng), 0.0)
    image = ndimage.gaussian_filter(image, 0.6)  # partial-volume blur at the edges, as scanners have
    bias = 1.0 + 0.1 * np.tanh(_texture(shape, 1.0, size.min() / 3, rng))
    image = image * bias + rng.normal(0.0, _NOISE_STD, shape)
    return image.astype(np.float32), label


def make_phantom_dataset(
    out_dir: str | Path,
    spatial_dims: int = 3,
    num_cases: int = 24,
    shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> Path:
    """Write a phantom dataset to `out_dir` (which must be new or empty) and return it. The same arguments
    always give the same data; calling again on a folder made with the same arguments returns it as it is."""
    if spatial_dims not in DEFAULT_SHAPES:
        raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
    shape = tuple(int(s) for s in (shape or DEFAULT_SHAPES[spatial_dims]))
    if len(shape) != spatial_dims or min(shape) < 8 or num_cases < 1:
        raise ValueError(
            f"need {spatial_dims} sizes >= 8 and at least one case; got shape {shape}, {num_cases} cases"
        )
    out_dir = Path(out_dir)
    settings = {
        "generator": "usema.data.phantoms",
        "version": _GENERATOR_VERSION,
        "spatial_dims": spatial_dims,
        "num_cases": num_cases,
        "shape": list(shape),
        "seed": seed,
    }
    if out_dir.exists() and any(out_dir.iterdir()):
        marker = out_dir / MARKER
        if marker.is_file() and json.loads(marker.read_text()) == settings:
            return out_dir
        raise DataError(
            out_dir,
            "is not empty and holds no phantoms made with these settings; choose a new or empty folder",
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling folder and rename it into place: an interrupted run leaves no half dataset behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_cases(staging, shape, num_cases, seed)
        (staging / MARKER).write_text(json.dumps(settings, indent=1) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _write_cases(root: Path, shape: tuple[int, ...], num_cases: int, seed: int) -> None:
    names = [f"phantom_{i:03d}" for i in range(num_cases)]
    cases = [phantom_case(shape, np.random.default_rng([seed, i])) for i in range(num_cases)]
    if len(shape) == 3:
        import nibabel as nib

        (root / "imagesTr").mkdir()
        (root / "labelsTr").mkdir()
        affine = np.eye(4)  # 1 mm isotropic spacing, identity orientation
        for name, (image, label) in zip(names, cases, strict=True):
            nib.save(nib.Nifti1Image(image * 100 + 300, affine), str(root / "imagesTr" / f"{name}.nii.gz"))
            nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"{name}.nii.gz"))
        manifest: dict[str, Any] = {
            "name": "usema phantoms",
            "description": "ellipsoid (1) with a touching blob (2); generated",
            "tensorImageSize": "3D",
            "modality": {"0": "MRI"},
            "labels": {str(k): v for k, v in PHANTOM_LABELS.items()},
            "numTraining": num_cases,
            "numTest": 0,
            "training": [
                {"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names
            ],
            "test": [],
        }
        (root / "dataset.json").write_text(json.dumps(manifest, indent=1) + "\n")
        return
    from PIL import Image

    (root / "images").mkdir()
    (root / "labels").mkdir()
    for name, (image, label) in zip(names, cases, strict=True):
        gray = np.clip(np.round(image * 60 + 60), 0, 255).astype(np.uint8)
        Image.fromarray(gray).save(root / "images" / f"{name}.png")
        Image.fromarray(label).save(root / "labels" / f"{name}.png")
