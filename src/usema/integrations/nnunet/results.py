"""`usema predict` on an nnU-Net results folder of a USEMA model (trained with `-tr nnUNetTrainerUSEMA` or on
plans converted by `usema nnunet-plans`).

Such a folder (nnUNet_results/DatasetX/TRAINER__PLANS__CONFIGURATION) holds nnU-Net's plans.json and
dataset.json and fold_K/checkpoint_{best,final}.pth. It is predicted by nnU-Net's own predictor, because only
nnU-Net's preprocessing (cropping, its resampling and normalisation) gives the inputs the network was trained
on; usema supplies the network (built by nnUNetTrainerUSEMA, without nnU-Net's trainer search, which needs timm),
reads the checkpoints safely, and applies its own checks of the inputs and the output folder. The output is
nnU-Net's: CASE.<file ending> per case, with `save_probabilities` also CASE.npz and CASE.pkl.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

from usema.errors import CheckpointError, UsemaError

# usema's checkpoint names -> nnU-Net's files
CHECKPOINTS = {"best": "checkpoint_best.pth", "latest": "checkpoint_final.pth"}


def is_results_folder(folder: str | Path) -> bool:
    """Whether `folder` is an nnU-Net results folder: nnU-Net's plans.json (with configurations), dataset.json
    and at least one fold_K holding a .pth checkpoint."""
    folder = Path(folder)
    try:
        plans = json.loads((folder / "plans.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(plans, dict)
        and "configurations" in plans
        and (folder / "dataset.json").is_file()
        and any(folder.glob("fold_*/checkpoint_*.pth"))
    )


def _fold_checkpoints(folder: Path, checkpoint: str, fold: int | None, folds) -> list[Path]:
    name = CHECKPOINTS[checkpoint]
    if fold is not None:
        wanted = [str(fold)]
    elif folds in (None, "all") or list(folds) == ["all"]:
        wanted = sorted(p.parent.name.removeprefix("fold_") for p in folder.glob(f"fold_*/{name}"))
    else:
        wanted = [str(f) for f in ([folds] if isinstance(folds, (int, str)) else folds)]
    paths = [folder / f"fold_{number}" / name for number in wanted]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise CheckpointError(f"{missing[0]}: no such nnU-Net checkpoint")
    if not paths:
        other = "checkpoint_final.pth (--checkpoint latest)" if checkpoint == "best" else "checkpoint_best.pth"
        raise CheckpointError(f"{folder}: no fold holds {name}; nnU-Net's other one is {other}")
    return paths


def predict_results_folder(
    folder: str | Path,
    inputs: Sequence[str | Path],
    output: str | Path,
    checkpoint: str = "best",
    fold: int | None = None,
    folds=None,
    tta: bool = True,
    step_size: float = 0.5,
    device: str = "auto",
    save_probabilities: bool = False,
    overwrite: bool = False,
    resume: bool = False,
) -> list[Path]:
    """Segment `inputs` (files or folders, nnU-Net's CASE_0000 naming) with the USEMA network of an nnU-Net
    results folder, through nnU-Net's predictor; the folds' outputs are averaged as nnU-Net does. Returns the
    segmentation paths. `checkpoint` "best" reads checkpoint_best.pth, "latest" checkpoint_final.pth.
    `resume` keeps the cases whose outputs are there and that OUT/usema_predict.json lists as finished with
    the same settings, and is refused where the record names other settings
    (`usema.inference.prediction_record`); unlike nnUNetv2_predict --continue_prediction it does not keep a
    segmentation whose writing was cut off."""
    if importlib.util.find_spec("nnunetv2") is None:
        raise UsemaError(f"{folder}: an nnU-Net results folder, which nnU-Net predicts: pip install --no-deps "
                         "nnunetv2 (docs/nnunet.md)")
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from usema.inference.inputs import InferenceCase, check_cases, check_output_location, collect_cases
    from usema.inference.prediction_record import prediction_settings, split_cases, write_record
    from usema.inference.probabilities import NNUNET_PREDICTION_ARGS, folder_paths, probability_paths
    from usema.integrations.nnunet.network import NETWORK_CLASS_NAME
    from usema.integrations.nnunet.trainer import nnUNetTrainerUSEMA
    from usema.training.pretrained import read_checkpoint_allowing_numpy
    from usema.utils.device import resolve_device

    folder, output = Path(folder), Path(output)
    paths = _fold_checkpoints(folder, checkpoint, fold, folds)
    # nnU-Net's checkpoints (a foreign format: init_args, network_weights, ...), read safely but not as usema's
    # usema.checkpoint.Checkpoint
    payloads = [read_checkpoint_allowing_numpy(path) for path in paths]
    first = payloads[0]
    plans = PlansManager(json.loads((folder / "plans.json").read_text()))
    dataset = json.loads((folder / "dataset.json").read_text())
    configuration = plans.get_configuration(first["init_args"]["configuration"])
    trainer = str(first.get("trainer_name"))
    if trainer != "nnUNetTrainerUSEMA" and configuration.network_arch_class_name != NETWORK_CLASS_NAME:
        raise UsemaError(
            f"{folder}: holds nnU-Net's {configuration.network_arch_class_name.rsplit('.', 1)[-1]} trained by "
            f"{trainer}, not USEMA; predict it with nnUNetv2_predict"
        )
    channels = determine_num_input_channels(plans, configuration, dataset)
    image_channels = len(dataset["channel_names"])  # the files' channels (a cascade's network adds its own)

    # usema's grouping of the input files and its checks of the output folder (nothing overwritten unasked)
    ending = dataset["file_ending"]
    cases: list[InferenceCase] = collect_cases(inputs, _ChannelPlan(image_channels))
    bad = [case for case in cases if case.suffix != ending]
    if bad:
        raise UsemaError(f"{bad[0].images[0]}: the model reads {ending} files (its dataset.json's file_ending)")
    targets = [output / f"{case.case_id}{ending}" for case in cases]
    extras = [p for case in cases for p in probability_paths(output, case.case_id)] if save_probabilities else []
    written_by_nnunet = [*folder_paths(output), output / NNUNET_PREDICTION_ARGS]
    planned = targets + extras + written_by_nnunet
    check_output_location(output, inputs, planned, overwrite or resume)
    # every input's header, before the first prediction: nnU-Net's 2d configurations take 3D volumes slice by
    # slice, and its readers convert no channels
    spatial_dims = len(configuration.patch_size)
    check_cases(cases, {2, 3} if spatial_dims == 2 else {3}, image_channels, converts_photos=False)
    network = nnUNetTrainerUSEMA.build_network_architecture(
        plans, configuration, channels, plans.get_label_manager(dataset).num_segmentation_heads,
        enable_deep_supervision=False,
    )
    network.load_state_dict(first["network_weights"])
    torch_device = resolve_device(device)
    # nnU-Net's predictor autocasts on CUDA (float16) and predicts in float32 elsewhere
    settings = prediction_settings(folder, paths, tta, step_size, "fp16" if torch_device.type == "cuda" else "fp32",
                                   save_probabilities, overlay=False)
    outputs_of_case = {
        target.name: [target, *(probability_paths(output, case.case_id) if save_probabilities else [])]
        for case, target in zip(cases, targets)
    }
    todo, predicted = split_cases(output, settings, outputs_of_case, resume, overwrite)
    predictor = nnUNetPredictor(tile_step_size=step_size, use_mirroring=tta, device=torch_device,
                                allow_tqdm=False)
    predictor.manual_initialization(network, plans, configuration, [p["network_weights"] for p in payloads],
                                    dataset, trainer, first.get("inference_allowed_mirroring_axes"))
    if not todo:
        return targets
    output.mkdir(parents=True, exist_ok=True)
    case_of = {target.name: case for case, target in zip(cases, targets)}
    for name in todo:  # one case at a time, so that the record lists each case once nnU-Net has written it
        case = case_of[name]
        write_record(output, settings, predicted, [name])  # before nnU-Net writes: a killed prediction resumes
        predictor.predict_from_files_sequential([[str(p) for p in case.images]], [str(output / case.case_id)],
                                                save_probabilities=save_probabilities, overwrite=True)
        predicted.append(name)
        write_record(output, settings, predicted)
    return targets


class _ChannelPlan:
    """What `collect_cases` reads of a plan: nnU-Net's one file per channel, CASE_0000 ... CASE_NNNN (an RGB
    photograph: CASE_0000 alone)."""

    def __init__(self, channels: int):
        self.dataset = type("Dataset", (), {"num_channels": channels, "format": "nnunet"})()
