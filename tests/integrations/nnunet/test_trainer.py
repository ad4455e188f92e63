"""nnUNetTrainerUSEMA with nnU-Net's own code: both build_network_architecture forms, plain and converted plans,
get_network_from_plans, and nnU-Net's trainer search in the extra-trainer folder."""

import inspect
import json

import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunetv2.utilities.find_class_by_name import recursive_find_python_class  # noqa: E402
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name  # noqa: E402
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: E402

from usema.integrations.nnunet import convert_plans, ext_trainer_folder  # noqa: E402
from usema.integrations.nnunet.network import USEMAnnUNet  # noqa: E402
from usema.integrations.nnunet.trainer import nnUNetTrainerUSEMA  # noqa: E402
from usema.nn.sema_block import SEMABlock  # noqa: E402


def configuration(plans_file, name="3d_fullres"):
    plans = PlansManager(json.loads(plans_file.read_text()))
    return plans, plans.get_configuration(name)


def sema_counts(net) -> list[int]:
    return [sum(isinstance(m, SEMABlock) for m in stage) for stage in net.encoder]


def test_both_call_forms_build_the_same_usema(resenc_plans_file):
    plans, config = configuration(convert_plans(resenc_plans_file, placement="deepest-2", head_dim=8))
    build = nnUNetTrainerUSEMA.build_network_architecture
    assert "plans_manager" in inspect.signature(build).parameters  # nnU-Net 2.7+ then calls the new form
    pieces = (config.network_arch_class_name, config.network_arch_init_kwargs,
              config.network_arch_init_kwargs_req_import)
    networks = {
        "2.7+ training": build(plans, config, 1, 3, True),
        "2.7+ inference": build(plans, config, 1, 3, enable_deep_supervision=False),
        "2.3-2.6 training": build(*pieces, 1, 3, True),
        "2.3-2.6 inference": build(*pieces, 1, 3, enable_deep_supervision=False),
    }
    keys = {name: sorted(net.state_dict()) for name, net in networks.items()}
    assert all(k == keys["2.7+ training"] for k in keys.values())
    assert {name: net.deep_supervision for name, net in networks.items()} == {
        "2.7+ training": True, "2.7+ inference": False, "2.3-2.6 training": True, "2.3-2.6 inference": False}
    assert all(isinstance(net, USEMAnnUNet) and sema_counts(net) == [0, 1, 1] for net in networks.values())
    assert networks["2.7+ training"].encoder[0][0].conv1.conv.weight.shape == (8, 1, 1, 3, 3)
    assert config.network_arch_init_kwargs["conv_op"] == "torch.nn.modules.conv.Conv3d"  # the plans stay as read


def test_plain_resenc_plans_get_usema_with_sema_blocks_where_usemas_plans_put_them(resenc_plans_file):
    plans, config = configuration(resenc_plans_file, "2d")
    net = nnUNetTrainerUSEMA.build_network_architecture(plans, config, 2, 4, True)
    assert isinstance(net, USEMAnnUNet) and net.spatial_dims == 2
    assert sema_counts(net) == [0, 1, 1]  # deepest-2
    assert [tuple(o.shape) for o in net(torch.randn(1, 2, 16, 16))] == [(1, 4, 16, 16), (1, 4, 8, 8)]


def test_nnunet_builds_converted_plans_itself_and_switches_deep_supervision(resenc_plans_file):
    _, config = configuration(convert_plans(resenc_plans_file, head_dim=8))
    net = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                 config.network_arch_init_kwargs_req_import, 1, 2, deep_supervision=True)
    assert isinstance(net, USEMAnnUNet) and sema_counts(net) == [0, 1, 1]
    x = torch.randn(2, 1, 16, 16, 16)
    outputs = net(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 16, 16, 16), (2, 2, 16, 8, 8)]
    sum(o.mean() for o in outputs).backward()
    net.decoder.deep_supervision = False  # nnU-Net's nnUNetTrainer.set_deep_supervision_enabled(False)
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 16, 16, 16)


def test_nnunets_search_of_an_extra_trainer_folder_finds_the_trainer():
    folder = str(ext_trainer_folder())
    # what nnU-Net 2.8 runs for each folder in nnUNet_extTrainer
    found = recursive_find_python_class(folder, "nnUNetTrainerUSEMA", None, base_folder=folder,
                                        cleanup_imports_from_base_folder=True)
    assert found is nnUNetTrainerUSEMA


def test_the_whole_search_by_name_through_nnunet_exttrainer(monkeypatch):
    from usema.integrations.nnunet import TRAINER_MODULE, nnunet_trainer_folder

    monkeypatch.setenv("nnUNet_extTrainer", str(ext_trainer_folder()))
    try:
        import timm  # noqa: F401
    except Exception:
        timm_missing = True
    else:
        timm_missing = False
    installed = (nnunet_trainer_folder() / TRAINER_MODULE).is_file()  # `usema nnunet-install-trainer` (make runs it)
    if timm_missing and not installed:
        # nnU-Net 2.8 imports its own Primus trainers (dynamic-network-architectures -> timm -> torchvision) before
        # it reads nnUNet_extTrainer; without timm its search stops there, whatever the trainer: the module
        # installed at the top of nnU-Net's trainer folder is found before that import
        with pytest.raises(ModuleNotFoundError, match="timm"):
            recursive_find_trainer_class_by_name("nnUNetTrainerUSEMA")
    else:
        assert recursive_find_trainer_class_by_name("nnUNetTrainerUSEMA") is nnUNetTrainerUSEMA
