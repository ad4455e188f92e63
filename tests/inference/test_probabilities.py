"""`--save-probabilities`: OUT/<case>.npz and OUT/<case>.pkl in nnU-Net v2's layout, read back as written."""

import pickle
from pathlib import Path

import numpy as np

from usema.data.io import ImageGeometry
from usema.inference.inputs import InferenceCase
from usema.inference.probabilities import write_probabilities
from usema.planning import Plans


def test_the_probabilities_and_the_properties_are_written_as_nnunet_reads_them(tmp_path):
    plans = Plans({
        "version": 3,
        "dataset": {"path": "/nonexistent", "format": "msd", "spatial_dims": 3, "num_channels": 1,
                    "labels": {"0": "background", "1": "tumour"}, "label_mode": "semantic", "num_classes": 2,
                    "cases": ["a"]},
        "target_spacing": [1.0, 1.0, 1.0], "normalization": {"scheme": "none"},
        "patch_size": [8, 8, 8], "batch_size": 2, "model": {"name": "usema-nosema"},
        "training": {"optimizer": "adamw", "lr": 3e-3, "epochs": 1, "iters_per_epoch": 1},
    })
    geometry = ImageGeometry(shape=(4, 5, 3), spacing=(2.0, 1.0, 1.0), affine=np.diag([2.0, 1, 1, 1]).tolist())
    case = InferenceCase("case_7", (Path("/in/case_7.nii.gz"),), ".nii.gz")
    probabilities = np.random.default_rng(0).dirichlet([1, 1], size=(4, 5, 3)).transpose(3, 0, 1, 2)

    npz, pkl = write_probabilities(probabilities, geometry, case, plans, tmp_path)

    assert (npz, pkl) == (tmp_path / "case_7.npz", tmp_path / "case_7.pkl")
    with np.load(npz) as stored:
        assert list(stored) == ["probabilities"] and stored["probabilities"].dtype == np.float32
        np.testing.assert_allclose(stored["probabilities"], probabilities, rtol=1e-6)
    properties = pickle.loads(pkl.read_bytes())
    assert properties["spacing"] == [2.0, 1.0, 1.0] and properties["shape_before_cropping"] == [4, 5, 3]
    assert properties["bbox_used_for_cropping"] == [[0, 4], [0, 5], [0, 3]]  # nothing is cropped
    assert properties["case_id"] == "case_7" and properties["classes"]["1"] == "tumour"
    assert ImageGeometry.from_dict(properties["geometry"]) == geometry
