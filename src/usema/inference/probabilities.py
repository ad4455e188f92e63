"""`usema predict --save-probabilities`: the class probabilities of each case, in nnU-Net v2's files and layout.

Beside each segmentation, OUT/<case>.npz holds one array, `probabilities` (classes, *spatial) float32 on the
input image's grid (the segmentation is its argmax), and OUT/<case>.pkl the image's properties; OUT/dataset.json
and OUT/plans.json say what `nnUNetv2_ensemble` and `nnUNetv2_evaluate_folder` need (labels, file ending, the
reader-writer of the images), as nnU-Net's own prediction folders do. Folders of usema and of nnU-Net then
ensemble with each other.

The spatial axes are in nnU-Net's order (nnunetv2/inference/export_prediction.py writes the arrays its
reader-writer returned): NIfTI and ITK images reversed from usema's voxel order (i, j, k) to SimpleITK's (z, y,
x); 2D images with nnU-Net's leading axis of one, (classes, 1, rows, columns). The properties are those nnU-Net's
reader-writers and preprocessing give (`spacing` in that order, the shapes, the cropping box: usema crops
nothing, so they are the image's), the reader-writer's own entries (`nibabel_stuff`, `sitk_stuff`), and usema's
(`usema`: the case id, the input files, the class names and the image geometry). Everything in them is a plain
Python value (dict, list, str, int, float, bool, None), so reading them back runs no code beyond the pickle
module's own.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from usema.data.io import ImageGeometry
from usema.inference.prediction_record import RECORD_NAME
from usema.utils.atomic import atomic_path

if TYPE_CHECKING:  # inputs.py asks `is_prediction_folder` before it lets a folder be written to
    from usema.inference.inputs import InferenceCase
    from usema.planning.plans import Plans

# nnU-Net's reader-writer for the images of each usema format (NibabelIO reads 3D NIfTI only)
NNUNET_READER_WRITER = {"png": "NaturalImage2DIO", "bmp": "NaturalImage2DIO", "jpeg": "NaturalImage2DIO",
                        "itk": "SimpleITKIO"}
# What marks OUT/plans.json as usema's description of a prediction folder, not a dataset's plan.
PREDICTIONS_KEY = "usema_predictions"
FOLDER_FILES = ("dataset.json", "plans.json")
# What nnU-Net's predictor writes beside dataset.json and plans.json in its output folders.
NNUNET_PREDICTION_ARGS = "predict_from_raw_data_args.json"


def probability_paths(output: str | Path, case_id: str) -> tuple[Path, Path]:
    """OUT/<case>.npz and OUT/<case>.pkl."""
    return Path(output) / f"{case_id}.npz", Path(output) / f"{case_id}.pkl"


def folder_paths(output: str | Path) -> list[Path]:
    """OUT/dataset.json and OUT/plans.json, which nnUNetv2_ensemble reads from its first input folder."""
    return [Path(output) / name for name in FOLDER_FILES]


def is_prediction_folder(folder: str | Path) -> bool:
    """Whether `folder` holds the plans.json that `write_folder_files` writes or usema predict's record, or is
    an output folder of nnU-Net's predictor: a folder of predictions, not a dataset, although it holds a
    dataset.json."""
    if (Path(folder) / NNUNET_PREDICTION_ARGS).is_file() or (Path(folder) / RECORD_NAME).is_file():
        return True
    try:
        return PREDICTIONS_KEY in json.loads((Path(folder) / "plans.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def reader_writer(geometry: ImageGeometry) -> str:
    """The name of nnU-Net's reader-writer for images like this one."""
    if geometry.format == "nifti":
        return "NibabelIO" if geometry.spatial_dims == 3 else "SimpleITKIO"
    if geometry.format == "tiff":
        return "Tiff3DIO" if geometry.spatial_dims == 3 else "NaturalImage2DIO"
    return NNUNET_READER_WRITER[geometry.format]


def _reversed_axes(geometry: ImageGeometry) -> bool:
    """usema keeps NIfTI and ITK arrays in voxel order (i, j, k); nnU-Net's readers give (z, y, x)."""
    return geometry.format in ("nifti", "itk")


def to_nnunet_layout(probabilities: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """(classes, *spatial) in usema's order -> nnU-Net's: spatial axes reversed for NIfTI and ITK images, and
    2D images with a leading spatial axis of one."""
    array = np.asarray(probabilities, dtype=np.float32)
    if _reversed_axes(geometry):
        array = array.transpose(0, *range(array.ndim - 1, 0, -1))
    if geometry.spatial_dims == 2:
        array = array[:, None]
    return np.ascontiguousarray(array)


def _sitk_geometry(geometry: ImageGeometry) -> dict[str, list[float]]:
    """SimpleITK's spacing, origin and direction of the image (ITK files keep them; NIfTI's affine is RAS, which
    SimpleITK reads as LPS: the first two world axes change sign)."""
    if geometry.format == "itk":
        return {key: [float(v) for v in geometry.extra[key]] for key in ("origin", "direction")} | {
            "spacing": list(geometry.spacing)
        }
    n = geometry.spatial_dims
    affine = np.asarray(geometry.affine if geometry.affine is not None else np.diag([*geometry.spacing, 1.0]))
    flip = np.diag([-1.0, -1.0, 1.0][:n])
    rotation = affine[:n, :n] / np.asarray(geometry.spacing)[None]
    return {
        "spacing": list(geometry.spacing),
        "origin": (flip @ affine[:n, 3]).tolist(),
        "direction": (flip @ rotation).ravel().tolist(),
    }


def case_properties(geometry: ImageGeometry, case: InferenceCase, plans: Plans) -> dict[str, Any]:
    """The .pkl's dict: nnU-Net's properties and its reader-writer's entries, then usema's (module docstring)."""
    shape = [int(s) for s in to_nnunet_layout(np.zeros((1, *geometry.shape), np.float32), geometry).shape[1:]]
    spacing = list(geometry.spacing[::-1] if _reversed_axes(geometry) else geometry.spacing)
    if geometry.spatial_dims == 2:
        spacing = [999.0, *spacing]  # nnU-Net's spacing of the axis of one that 2D images get
    properties: dict[str, Any] = {
        "spacing": [float(s) for s in spacing],
        "shape_before_cropping": shape,
        "shape_after_cropping_and_before_resampling": shape,
        "bbox_used_for_cropping": [[0, s] for s in shape],
    }
    name = reader_writer(geometry)
    if name == "NibabelIO":
        properties["nibabel_stuff"] = {"original_affine": geometry.affine}
    elif name == "SimpleITKIO":
        properties["sitk_stuff"] = _sitk_geometry(geometry)
    properties["usema"] = {
        "case_id": case.case_id,
        "images": [str(path) for path in case.images],
        "classes": dict(plans.dataset.labels),
        "label_mode": plans.dataset.label_mode,
        # the label value the segmentation files give each probability channel (None: instance ids)
        "label_values": plans.dataset.label_values,
        "geometry": geometry.to_dict(),
    }
    return properties


def write_probabilities(
    probabilities: np.ndarray,
    geometry: ImageGeometry,
    case: InferenceCase,
    plans: Plans,
    output: Path,
) -> tuple[Path, Path]:
    """Write OUT/<case>.npz (`probabilities` in nnU-Net's layout, compressed) and OUT/<case>.pkl atomically;
    returns both."""
    npz, pkl = probability_paths(output, case.case_id)
    with atomic_path(npz) as tmp:
        np.savez_compressed(tmp, probabilities=to_nnunet_layout(probabilities, geometry))
    with atomic_path(pkl) as tmp, open(tmp, "wb") as handle:
        pickle.dump(case_properties(geometry, case, plans), handle, protocol=pickle.HIGHEST_PROTOCOL)
    return npz, pkl


def nnunet_labels(plans: Plans) -> dict[str, int]:
    """nnU-Net's "labels" (name -> value, "background" 0, "ignore" last where the plan has one): the plan's
    class names, or the value where a name is missing or taken."""
    labels: dict[str, int] = {"background": 0}
    for value, name in enumerate(plans.dataset.class_names, start=1):
        labels[name if name not in labels else str(value)] = value
    if plans.dataset.ignore_label is not None:
        labels["ignore"] = int(plans.dataset.ignore_label)
    return labels


def write_folder_files(output: Path, plans: Plans, geometry: ImageGeometry, file_ending: str) -> list[Path]:
    """OUT/dataset.json and OUT/plans.json for nnU-Net's tools: the labels and segmentation file ending, and
    the reader-writer for the images (one per folder: the first case's). Written atomically."""
    dataset = {
        "channel_names": {str(i): name for i, name in enumerate(plans.dataset.channel_names or ["image"])},
        "labels": nnunet_labels(plans),
        "numTraining": 0,
        "file_ending": file_ending,
    }
    nnunet_plans = {
        "dataset_name": Path(plans.dataset.path).name,
        "plans_name": "usemaPredictions",
        "image_reader_writer": reader_writer(geometry),
        "label_manager": "LabelManager",
        "transpose_forward": list(range(3)),
        "transpose_backward": list(range(3)),
        "configurations": {},
        PREDICTIONS_KEY: {"plans": str(plans.source)},
    }
    paths = folder_paths(output)
    for path, content in zip(paths, (dataset, nnunet_plans), strict=True):
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(content, indent=2) + "\n")
    return paths
