"""--pretrained-weights: tensors that match by name and shape are loaded, the rest reported."""

import pytest
import torch

from usema.errors import CheckpointError
from usema.models import build_model
from usema.training.checkpoint import save_checkpoint
from usema.training.pretrained import load_matching_weights

SETTINGS = {"base_features": 4, "blocks_per_stage": 1, "n_stages": 3}


def _network(num_classes, seed):
    torch.manual_seed(seed)
    return build_model("usema-nosema", 2, 1, num_classes, **SETTINGS)


def test_matching_tensors_are_loaded_and_the_heads_of_another_class_count_reported(tmp_path):
    source, target = _network(4, seed=0), _network(3, seed=1)
    heads_before = {k: v.clone() for k, v in target.state_dict().items() if v.shape != source.state_dict()[k].shape}
    save_checkpoint({"model_state": source.state_dict(), "model": {"name": "usema-nosema"}}, tmp_path / "ckpt.pt")

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
