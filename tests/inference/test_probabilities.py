"""`--save-probabilities` in nnU-Net's layout: nnU-Net's readers, label manager and ensembling take the files."""

import pickle

import nibabel as nib
import numpy as np
import pytest
import torch

from usema.inference.predict_files import predict
from usema.inference.prediction_record import RECORD_NAME
from usema.inference.probabilities import is_prediction_folder

nnunet_io = pytest.importorskip("nnunetv2.imageio.simpleitk_reader_writer")


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    """(image, run): an anisotropic, rotated 3D NIfTI case and an untrained tiny USEMA planned for it."""
    from usema.checkpoint import Checkpoint
    from usema.data.phantoms import make_phantom_dataset
    from usema.planning.planner import plan_dataset

    root = tmp_path_factory.mktemp("probabilities")
    data = make_phantom_dataset(root / "data", spatial_dims=3, num_cases=2, shape=(12, 10, 8), seed=0)
    plans = plan_dataset(data, root / "run", device="cpu", patch_size=[8, 8, 8], batch_size=2,
                         network_settings={"base_features": 6, "blocks_per_stage": 1, "head_dim": 6})
    torch.manual_seed(0)
    network = plans.network
    Checkpoint(network.build().state_dict(), network, plans, fold=0, epoch=1).save(
        root / "run" / "fold_0" / "checkpoint_best.pt")
    # an oblique grid of three different sizes and spacings, named as nnU-Net names its inputs
    source = nib.load(str(sorted((data / "imagesTr").iterdir())[0]))
    affine = np.array([[0.0, -1.5, 0, 10], [2.0, 0, 0, -5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    image = root / "test" / "case_a_0000.nii.gz"
    image.parent.mkdir()
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj, dtype=np.float32), affine), str(image))
    return image, root / "run"


def test_probabilities_are_in_nnunet_axis_order_with_its_properties(run_3d, tmp_path):
    image, run = run_3d
    (segmentation_path,) = predict(run, [image.parent], tmp_path / "out", device="cpu", tta=False,
                                   save_probabilities=True)
    assert segmentation_path.name == "case_a.nii.gz"

    read_image, image_properties = nnunet_io.SimpleITKIO().read_images([str(image)])
    with np.load(tmp_path / "out" / "case_a.npz") as stored:
        probabilities = stored["probabilities"]
    assert probabilities.shape == (3, *read_image.shape[1:]) == (3, 8, 10, 12)
    read_segmentation, _ = nnunet_io.SimpleITKIO().read_seg(str(segmentation_path))
    np.testing.assert_array_equal(probabilities.argmax(axis=0), read_segmentation[0])

    with open(tmp_path / "out" / "case_a.pkl", "rb") as handle:
        properties = pickle.load(handle)
    np.testing.assert_allclose(properties["spacing"], image_properties["spacing"])
    assert properties["shape_before_cropping"] == [8, 10, 12]
    assert properties["bbox_used_for_cropping"] == [[0, 8], [0, 10], [0, 12]]
    np.testing.assert_allclose(properties["nibabel_stuff"]["original_affine"], nib.load(str(image)).affine)
    assert properties["usema"]["case_id"] == "case_a" and properties["usema"]["images"] == [str(image)]


def test_nnunet_merges_a_usema_folder_as_its_own(run_3d, tmp_path):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.ensembling.ensemble import merge_files
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    image, run = run_3d
    out = tmp_path / "out"
    predict(run, [image], out, device="cpu", tta=False, save_probabilities=True)
    dataset = load_json(str(out / "dataset.json"))
    assert dataset["labels"] == {"background": 0, "ellipsoid": 1, "blob": 2}
    assert dataset["file_ending"] == ".nii.gz"
    manager = PlansManager(str(out / "plans.json"))
    assert manager.image_reader_writer_class.__name__ == "NibabelIO"

    merge_files([str(out / "case_a.npz")] * 2, str(tmp_path / "merged"), ".nii.gz",
                manager.image_reader_writer_class(), manager.get_label_manager(dataset))
    merged, ours = nib.load(str(tmp_path / "merged.nii.gz")), nib.load(str(out / "case_a.nii.gz"))
    np.testing.assert_array_equal(np.asarray(merged.dataobj), np.asarray(ours.dataobj))
    np.testing.assert_allclose(merged.affine, ours.affine)

    # the folder's dataset.json marks no dataset: predicting into it again needs --overwrite only
    with pytest.raises(Exception, match="exists already"):
        predict(run, [image], out, device="cpu", tta=False, save_probabilities=True)
    predict(run, [image], out, device="cpu", tta=False, save_probabilities=True, overwrite=True)


def test_a_folder_with_dataset_json_is_a_prediction_folder_only_with_what_predict_writes_beside_it(tmp_path):
    (tmp_path / "dataset.json").write_text("{}")
    assert not is_prediction_folder(tmp_path)  # a dataset
    (tmp_path / RECORD_NAME).write_text("{}")  # usema predict's record, even where plans.json was lost
    assert is_prediction_folder(tmp_path)
