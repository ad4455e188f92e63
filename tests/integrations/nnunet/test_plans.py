"""`usema nnunet-plans`: residual-encoder plans in, USEMA plans out, everything but the networks kept."""

import json

import pytest

from usema.cli import main
from usema.integrations.nnunet import convert_plans
from usema.integrations.nnunet.network import NETWORK_CLASS_NAME


def test_only_the_networks_change_and_the_plans_get_their_own_name(resenc_plans_file, resenc_plans):
    written = convert_plans(resenc_plans_file, placement="deepest-2", attention="window", window_size=3, head_dim=8)
    assert written == resenc_plans_file.parent / "nnUNetResEncUNetMPlans_USEMA.json"
    converted = json.loads(written.read_text())
    assert converted["plans_name"] == "nnUNetResEncUNetMPlans_USEMA"
    assert {k: v for k, v in converted.items() if k not in ("plans_name", "configurations")} == \
        {k: v for k, v in resenc_plans.items() if k not in ("plans_name", "configurations")}
    for name, config in converted["configurations"].items():
        original = resenc_plans["configurations"][name]
        assert {k: v for k, v in config.items() if k != "architecture"} == \
            {k: v for k, v in original.items() if k != "architecture"}  # data_identifier too: preprocessing reused
        if "architecture" not in original:
            assert "architecture" not in config  # the cascade inherits its network from 3d_fullres
            continue
        architecture = config["architecture"]
        assert architecture["network_class_name"] == NETWORK_CLASS_NAME
        assert architecture["_kw_requires_import"] == original["architecture"]["_kw_requires_import"]
        assert architecture["arch_kwargs"] == {**original["architecture"]["arch_kwargs"], "sema_per_stage": [0, 1, 1],
                                               "attention": "window", "window_size": 3, "head_dim": 8}
    assert json.loads(resenc_plans_file.read_text()) == resenc_plans  # the input is left as it was


@pytest.mark.parametrize("placement,expected", [
    ("all", [1, 1, 1]), ("0", [0, 0, 0]), ("2", [2, 2, 2]), ("bottleneck", [0, 0, 1]), ("deepest-2", [0, 1, 1]),
    ("from-2", [0, 0, 1]), ("0,1,1", [0, 1, 1]), (" 1, 0,2", [1, 0, 2]),
])
def test_placements_as_typed_reach_every_configuration(resenc_plans_file, placement, expected, capsys):
    assert main(["nnunet-plans", str(resenc_plans_file), "--placement", placement]) == 0
    converted = json.loads(resenc_plans_file.with_name("nnUNetResEncUNetMPlans_USEMA.json").read_text())
    placed = {name: config["architecture"]["arch_kwargs"]["sema_per_stage"]
              for name, config in converted["configurations"].items() if "architecture" in config}
    assert placed == {"2d": expected, "3d_fullres": expected, "3d_lowres": expected}


def test_the_plans_name_follows_the_output_file(resenc_plans_file, tmp_path):
    written = convert_plans(resenc_plans_file, tmp_path / "out" / "MyUSEMAPlans.json", placement=0)
    assert json.loads(written.read_text())["plans_name"] == "MyUSEMAPlans"
    named = convert_plans(resenc_plans_file, plans_name="Other")
    assert named == resenc_plans_file.parent / "Other.json"


def cli_error(capsys, *args) -> str:
    assert main(["nnunet-plans", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("usema nnunet-plans: error: ")
    return err.removeprefix("usema nnunet-plans: error: ").strip()


def test_bad_input_is_one_line_naming_the_file_and_the_problem(resenc_plans_file, resenc_plans, tmp_path, capsys):
    not_json = tmp_path / "notes.json"
    not_json.write_text("plans: yes")
    assert cli_error(capsys, not_json).startswith(f"{not_json}: not JSON")
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0}}))
    assert cli_error(capsys, dataset_json) == f"{dataset_json}: not an nnU-Net v2 plans file (it needs 'plans_name' " \
                                              "and 'configurations')"
    assert cli_error(capsys, tmp_path / "missing.json") == f"{tmp_path / 'missing.json'}: no such file"

    plain = tmp_path / "nnUNetPlans.json"
    plain_plans = json.loads(json.dumps(resenc_plans))
    plain_plans["plans_name"] = "nnUNetPlans"
    for config in plain_plans["configurations"].values():
        if "architecture" in config:
            config["architecture"]["network_class_name"] = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    plain.write_text(json.dumps(plain_plans))
    message = cli_error(capsys, plain)
    assert message.startswith(f"{plain}: configuration '2d': its network is dynamic_network_architectures.architectures"
                              ".unet.PlainConvUNet, not nnU-Net's ResidualEncoderUNet")
    assert "nnUNetPlannerResEncM" in message

    converted = convert_plans(resenc_plans_file)
    assert "builds USEMA already" in cli_error(capsys, converted, "-o", tmp_path / "again.json")
    batchnorm = json.loads(json.dumps(resenc_plans))
    for config in batchnorm["configurations"].values():
        if "architecture" in config:
            kwargs = config["architecture"]["arch_kwargs"]
            kwargs["norm_op"] = kwargs["norm_op"].replace("instancenorm.InstanceNorm", "batchnorm.BatchNorm")
    (tmp_path / "Batch.json").write_text(json.dumps(batchnorm))
    assert cli_error(capsys, tmp_path / "Batch.json", "-o", tmp_path / "BatchUSEMA.json") == \
        f"{tmp_path / 'Batch.json'}: configuration '2d': USEMA cannot honour norm_op=BatchNorm2d({{'eps': 1e-05, " \
        "'affine': True}): it normalises with instance norm {'eps': 1e-05, 'affine': True}"


def test_the_input_is_never_overwritten_and_names_must_agree(resenc_plans_file, capsys):
    before = resenc_plans_file.read_bytes()
    assert cli_error(capsys, resenc_plans_file, "-o", resenc_plans_file) == \
        f"{resenc_plans_file}: the output is the input; the input plans are never overwritten"
    elsewhere = resenc_plans_file.parent.parent / "nnUNetResEncUNetMPlans.json"
    assert cli_error(capsys, resenc_plans_file, "-o", elsewhere) == f"{resenc_plans_file}: the new plans need a name " \
        "other than 'nnUNetResEncUNetMPlans', or nnU-Net mixes their results"
    mismatch = resenc_plans_file.with_name("A.json")
    assert cli_error(capsys, resenc_plans_file, "-o", mismatch, "--plans-name", "B") == \
        f"{mismatch}: nnU-Net reads plans 'B' from B.json: name the output so"
    assert "unknown attention mode 'soft'" in cli_error(capsys, resenc_plans_file, "--attention", "soft")
    assert cli_error(capsys, resenc_plans_file, "--placement", "1,1") == f"{resenc_plans_file}: configuration " \
        "'2d': sema_per_stage has 2 entries, expected one per stage (3)"
    assert "configuration '2d': placement 'deepest-4' does not fit 3 stages" in cli_error(
        capsys, resenc_plans_file, "--placement", "deepest-4")
    assert resenc_plans_file.read_bytes() == before
    assert sorted(p.name for p in resenc_plans_file.parent.iterdir()) == [resenc_plans_file.name]


def test_the_command_says_what_to_pass_to_nnunet(resenc_plans_file, capsys):
    assert main(["nnunet-plans", str(resenc_plans_file), "--placement", "deepest-1"]) == 0
    out = capsys.readouterr().out
    assert out == f"wrote {resenc_plans_file.parent / 'nnUNetResEncUNetMPlans_USEMA.json'} " \
                  "(nnU-Net: -p nnUNetResEncUNetMPlans_USEMA)\n"


def test_without_a_placement_the_converted_network_is_the_usema_default(resenc_plans_file):
    from usema.integrations.nnunet.network import USEMAnnUNet, usema_arguments
    from usema.integrations.nnunet.plans import _imported
    from usema.models import USEMA
    from usema.models.summary import count_parameters

    architecture = json.loads(convert_plans(resenc_plans_file).read_text())["configurations"]["2d"]["architecture"]
    arch_kwargs = _imported(architecture["arch_kwargs"], architecture["_kw_requires_import"])
    assert arch_kwargs["sema_per_stage"] == [0, 1, 1]  # DEFAULT_PLACEMENT, deepest-2, on three stages
    converted = USEMAnnUNet(input_channels=1, num_classes=3, **arch_kwargs)
    # the same network USEMA builds by default from nnU-Net's arguments
    default = USEMA(in_channels=1, num_classes=3, **{k: v for k, v in usema_arguments(arch_kwargs).items()
                                                    if k != "sema_per_stage"})
    assert count_parameters(converted) == count_parameters(default)


@pytest.mark.parametrize(
    "key,value,problem",
    [
        ("features_per_stage", [8, 16], "features has 2 entries, expected one per stage (3)"),
        ("n_blocks_per_stage", [1, 2, 2, 2], "blocks_per_stage has 4 entries, expected one per stage (3)"),
        ("n_conv_per_stage_decoder", [1], "decoder_convs has 1 entries, expected one per stage (2)"),
    ],
)
def test_plans_whose_network_would_not_build_are_refused_when_written(
    resenc_plans_file, resenc_plans, tmp_path, capsys, key, value, problem
):
    broken = json.loads(json.dumps(resenc_plans))
    broken["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"][key] = value
    source = tmp_path / "Broken.json"
    source.write_text(json.dumps(broken))
    message = cli_error(capsys, source, "-o", tmp_path / "BrokenUSEMA.json")
    assert message == f"{source}: configuration '3d_fullres': its network would not build: {problem}"
    assert not (tmp_path / "BrokenUSEMA.json").exists()
