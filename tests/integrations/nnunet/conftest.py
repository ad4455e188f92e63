"""Small residual-encoder plans as nnU-Net's ResEnc planners write them (tiny widths, so networks build fast)."""

import json

import pytest

RESENC_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def resenc_architecture(spatial_dims: int, kernels: list, strides: list, features: list) -> dict:
    """A configuration's `architecture` entry as nnU-Net's ResEnc planners write it."""
    return {
        "network_class_name": RESENC_CLASS,
        "arch_kwargs": {
            "n_stages": len(strides), "features_per_stage": features,
            "conv_op": f"torch.nn.modules.conv.Conv{spatial_dims}d", "kernel_sizes": kernels, "strides": strides,
            "n_blocks_per_stage": [1, 2, 2][: len(strides)], "n_conv_per_stage_decoder": [1] * (len(strides) - 1),
            "conv_bias": True, "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{spatial_dims}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": list(REQUIRES_IMPORT),
    }


@pytest.fixture
def resenc_plans() -> dict:
    """Plans of a dataset 'Dataset990_Tiny' with 2d, 3d_fullres, 3d_lowres and a cascade that inherits."""
    def configuration(identifier: str, architecture: dict) -> dict:
        return {"data_identifier": identifier, "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                "patch_size": [16, 16, 16], "spacing": [3.0, 1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False], "architecture": architecture, "batch_dice": False}

    anisotropic = resenc_architecture(3, [[1, 3, 3], [3, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2], [2, 2, 2]], [8, 16, 32])
    return {
        "dataset_name": "Dataset990_Tiny", "plans_name": "nnUNetResEncUNetMPlans",
        "original_median_spacing_after_transp": [3.0, 1.0, 1.0], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {
            "2d": configuration("nnUNetPlans_2d", resenc_architecture(2, [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]], [8, 16, 32])),
            "3d_fullres": configuration("nnUNetPlans_3d_fullres", anisotropic),
            "3d_lowres": configuration("nnUNetResEncUNetMPlans_3d_lowres", anisotropic),
            "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
        },
        "experiment_planner_used": "nnUNetPlannerResEncM", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"mean": 1.0, "std": 1.0}},
    }


@pytest.fixture
def resenc_plans_file(tmp_path, resenc_plans):
    path = tmp_path / "Dataset990_Tiny" / "nnUNetResEncUNetMPlans.json"
    path.parent.mkdir()
    path.write_text(json.dumps(resenc_plans, indent=4))
    return path
