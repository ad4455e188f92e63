"""--pretrained-weights: tensors that match by name and shape are loaded, the rest reported."""

import numpy as np
import pytest
import torch

from usema.checkpoint import write_checkpoint_file
from usema.errors import CheckpointError
from usema.models import build_model
from usema.training.pretrained import load_matching_weights

SETTINGS = {"base_features": 4, "blocks_per_stage": 1, "n_stages": 3}


def _network(num_classes, seed):
    torch.manual_seed(seed)
    return build_model("usema-nosema", 2, 1, num_classes, **SETTINGS)


def test_matching_tensors_are_loaded_and_the_heads_of_another_class_count_reported(tmp_path):
    source, target = _network(4, seed=0), _network(3, seed=1)
    heads_before = {k: v.clone() for k, v in target.state_dict().items() if v.shape != source.state_dict()[k].shape}
    write_checkpoint_file({"model_state": source.state_dict(), "model": {"name": "usema-nosema"}}, tmp_path / "ckpt.pt")

    report = load_matching_weights(target, tmp_path / "ckpt.pt")

    assert heads_before  # the output heads differ in shape (4 classes against 3)
    mine, theirs = target.state_dict(), source.state_dict()
    for name, tensor in mine.items():
        expected = heads_before[name] if name in heads_before else theirs[name]
        torch.testing.assert_close(tensor, expected)
    total = len(mine)
    assert report[0] == (f"pretrained weights {tmp_path / 'ckpt.pt'}: loaded {total - len(heads_before)} of the "
                         f"network's {total} tensors; skipped {len(heads_before)} ({len(heads_before)} of another "
                         "shape, 0 not in the checkpoint); 0 of the checkpoint's tensors unused")
    assert sorted(line.split(":")[1].strip() for line in report[1:]) == sorted(heads_before)
    assert all("in the checkpoint" in line for line in report[1:])


def test_a_bare_state_dict_of_a_ddp_model_is_matched_without_its_prefix(tmp_path):
    source, target = _network(3, seed=0), _network(3, seed=1)
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "bare.pt")
    report = load_matching_weights(target, tmp_path / "bare.pt")
    assert len(report) == 1 and "skipped 0" in report[0]
    for name, tensor in target.state_dict().items():
        torch.testing.assert_close(tensor, source.state_dict()[name])


def test_weights_that_match_nothing_are_refused_naming_the_file(tmp_path):
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: none of its 1 tensors matches a tensor of the network .*"
                                              r"another model"):
        load_matching_weights(_network(3, 0), tmp_path / "other.pt")
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="empty.pt: holds no network weights"):
        load_matching_weights(_network(3, 0), tmp_path / "empty.pt")


def _resenc_and_usema():
    """A tiny 3D ResEnc UNet of nnU-Net and the USEMA that `usema nnunet-plans` makes of its plan."""
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    torch.manual_seed(0)
    resenc = unet.ResidualEncoderUNet(
        1, 3, [8, 16, 32], torch.nn.Conv3d, 3, [1, 2, 2], [1, 2, 2], 3, [1, 1], True, torch.nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True}, deep_supervision=True,
    )
    usema = build_model("usema", 3, 1, 3, features=[8, 16, 32], strides=[1, 2, 2], blocks_per_stage=[1, 2, 2],
                        decoder_convs=1, head_dim=8, sema_per_stage=[0, 1, 1])
    return resenc, usema


def _nnunet_checkpoint(weights, path):
    """What nnU-Net's trainer saves as checkpoint_final.pth: numpy scalars in its log, a torch.device."""
    torch.save({
        "network_weights": weights, "optimizer_state": {}, "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.41), np.float32(0.52)], "ema_fg_dice": [np.float64(0.4)],
                    "dice_per_class_or_region": [[np.float64(0.3), np.float64(0.5)]], "lrs": [0.01]},
        "_best_ema": np.float64(0.4), "current_epoch": 2, "trainer_name": "nnUNetTrainer",
        "init_args": {"plans": {}, "configuration": "3d_fullres", "fold": 0, "device": torch.device("cpu")},
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }, path)
    return path


def test_an_nnunet_resenc_checkpoint_is_read_safely_and_mapped_onto_usema_by_structure(tmp_path):
    resenc, usema = _resenc_and_usema()
    path = _nnunet_checkpoint(resenc.state_dict(), tmp_path / "checkpoint_final.pth")

    report = load_matching_weights(usema, path)

    assert report[0].startswith(f"pretrained weights {path} (nnU-Net's residual-encoder UNet, mapped by "
                                "structure): loaded 50 of the network's")
    # of the checkpoint, only stage 0's second conv (stem and first block where USEMA has one block) is unused
    assert report[0].endswith("4 of the checkpoint's tensors unused")
    theirs, mine = resenc.state_dict(), usema.state_dict()
    pairs = {
        "encoder.0.0.conv1.conv.weight": "encoder.stem.convs.0.conv.weight",
        "encoder.2.1.conv2.conv.weight": "encoder.stages.2.blocks.1.conv2.conv.weight",
        "encoder.1.0.conv3.conv.weight": "encoder.stages.1.blocks.0.skip.1.conv.weight",
        "encoder.1.0.norm3.bias": "encoder.stages.1.blocks.0.skip.1.norm.bias",
        "decoder.0.transp_conv.conv.weight": "decoder.transpconvs.0.weight",
        "decoder.1.conv_block.0.adn.N.weight": "decoder.stages.1.convs.0.norm.weight",
        "heads.1.conv.conv.bias": "decoder.seg_layers.1.bias",
    }
    for own_name, their_name in pairs.items():
        torch.testing.assert_close(mine[own_name], theirs[their_name])


def test_weights_of_which_less_than_half_fit_are_refused_unless_forced(tmp_path):
    resenc, usema = _resenc_and_usema()
    few = {f"x.{k}": v for k, v in resenc.state_dict().items()} | {"heads.1.conv.conv.bias": torch.ones(3)}
    path = _nnunet_checkpoint(few, tmp_path / "checkpoint_final.pth")
    before = usema.state_dict()["heads.1.conv.conv.bias"].clone()
    with pytest.raises(CheckpointError, match=r"checkpoint_final.pth: only 1 of its \d+ tensors fit the network.*"
                                              r"--force"):
        load_matching_weights(usema, path)
    torch.testing.assert_close(usema.state_dict()["heads.1.conv.conv.bias"], before)  # nothing loaded
    report = load_matching_weights(usema, path, force=True)
    assert "loaded 1 of the network's" in report[0]
    torch.testing.assert_close(usema.state_dict()["heads.1.conv.conv.bias"], torch.ones(3))
