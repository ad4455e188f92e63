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
import sys
from collections.abc import Sequence
from pathlib import Path

from usema.errors import CheckpointError, UsemaError

# usema's checkpoint names -> nnU-Net's files; nnUNetv2_predict reads checkpoint_final.pth unless told otherwise
CHECKPOINTS = {"best": "checkpoint_best.pth", "latest": "checkpoint_final.pth"}
DEFAULT_CHECKPOINT = "latest"
# nnU-Net's fold_all (nnUNetv2_train DATASET CONFIGURATION all, trained on every case): it predicts only when
# asked for, as nnUNetv2_predict -f all; its default ensemble is the cross-validation folds
FOLD_ALL = "all"


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


def results_checkpoints(
    folder: str | Path, checkpoint: str | None = None, fold: int | str | None = None, folds=None
) -> list[Path]:
    """The checkpoints of an nnU-Net results folder that predict: fold_`fold` alone ("all": nnU-Net's fold_all),
    each of `folds`, or by default (`folds` None or "all") every numbered fold holding the checkpoint, as
    nnUNetv2_predict's default folds; fold_all joins no default ensemble. `checkpoint` "latest" (the default,
    as nnU-Net's) is checkpoint_final.pth, "best" checkpoint_best.pth. CheckpointError names a fold or
    checkpoint that is not there and what the folder holds."""
    folder = Path(folder)
    if fold is not None and folds is not None:
        raise UsemaError("give a fold or a list of folds, not both")
    checkpoint = checkpoint or DEFAULT_CHECKPOINT
    if checkpoint not in CHECKPOINTS:
        raise UsemaError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    name = CHECKPOINTS[checkpoint]
    if fold is not None:
        wanted = [str(fold)]
    elif folds is None or folds == FOLD_ALL or (not isinstance(folds, (str, int)) and list(folds) == [FOLD_ALL]):
        numbered = [p.parent.name.removeprefix("fold_") for p in folder.glob(f"fold_*/{name}")]
        wanted = sorted((number for number in numbered if number.isdigit()), key=int)
        if folds is not None and wanted and (folder / f"fold_{FOLD_ALL}" / name).is_file():
            print(f"{folder}: --folds all is the numbered folds ({', '.join(wanted)}), as nnUNetv2_predict's "
                  "default; nnU-Net's fold_all (-f all) predicts alone with --fold all", file=sys.stderr)
        if not wanted:
            if (folder / f"fold_{FOLD_ALL}" / name).is_file():
                raise CheckpointError(f"{folder}: no numbered fold holds {name}, only fold_all: predict with it "
                                      "alone by --fold all (nnUNetv2_predict -f all)")
            other = [key for key in CHECKPOINTS if key != checkpoint][0]
            raise CheckpointError(f"{folder}: no fold holds {name}; nnU-Net's other one is {CHECKPOINTS[other]} "
                                  f"(--checkpoint {other})")
    else:
        given = [str(f) for f in ([folds] if isinstance(folds, (int, str)) else folds)]
        if not given or not all(number.isdigit() for number in given):
            raise UsemaError(f"folds must be fold numbers or 'all' alone (the numbered folds), got {given}; "
                             "nnU-Net's fold_all predicts alone, by fold 'all' (--fold all)")
        wanted = sorted(set(given), key=int)
    numbered_first = sorted((p.name for p in folder.glob("fold_*") if p.is_dir()),
                            key=lambda name: (not name[5:].isdigit(), int(name[5:]) if name[5:].isdigit() else 0, name))
    has = ", ".join(numbered_first) or "no fold"
    for number in wanted:
        fold_folder = folder / f"fold_{number}"
        if not fold_folder.is_dir():
            made_by = (" (nnU-Net's fold trained on every case, which nnUNetv2_train DATASET CONFIGURATION all "
                       "writes)" if number == FOLD_ALL else "")
            raise CheckpointError(f"{fold_folder}: no such fold{made_by}; {folder.name} has {has}")
        if not (fold_folder / name).is_file():
            held = [key for key, file in CHECKPOINTS.items() if (fold_folder / file).is_file()]
            holds = f"; {fold_folder.name} holds {CHECKPOINTS[held[0]]} (--checkpoint {held[0]})" if held else ""
            raise CheckpointError(f"{fold_folder / name}: no such nnU-Net checkpoint{holds}")
    return [folder / f"fold_{number}" / name for number in wanted]


def predict_results_folder(
    folder: str | Path,
    inputs: Sequence[str | Path],
    output: str | Path,
    checkpoint: str | None = None,
    fold: int | str | None = None,
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
    segmentation paths. The checkpoints and folds are `results_checkpoints`' (as nnUNetv2_predict's defaults:
    checkpoint_final.pth of fold_0 ... fold_K).
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
    from usema.inference.predict_files import describe
    from usema.inference.prediction_record import name_in, prediction_settings, split_cases, write_record
    from usema.inference.probabilities import NNUNET_PREDICTION_ARGS, folder_paths, probability_paths
    from usema.integrations.nnunet.network import NETWORK_CLASS_NAME
    from usema.integrations.nnunet.trainer import nnUNetTrainerUSEMA
    from usema.training.pretrained import read_checkpoint_allowing_numpy
    from usema.utils.device import resolve_device
    from usema.utils.text import counted

    folder, output = Path(folder), Path(output)
    paths = results_checkpoints(folder, checkpoint, fold, folds)
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
    todo, predicted = split_cases(output, settings, outputs_of_case, resume, overwrite, planned)
    predictor = nnUNetPredictor(tile_step_size=step_size, use_mirroring=tta, device=torch_device,
                                allow_tqdm=False)
    predictor.manual_initialization(network, plans, configuration, [p["network_weights"] for p in payloads],
                                    dataset, trainer, first.get("inference_allowed_mirroring_axes"))
    if not todo:
        return targets
    what = describe(paths, tta, step_size, torch_device, settings["precision"])
    print(f"predicting {counted(len(todo), 'case')} with {what}", file=sys.stderr, flush=True)
    output.mkdir(parents=True, exist_ok=True)
    case_of = {target.name: case for case, target in zip(cases, targets)}
    for name in todo:  # one case at a time, so that the record lists each case once nnU-Net has written it
        case = case_of[name]
        # every file nnU-Net writes for the case, listed before it writes: a killed prediction resumes
        writing = [*outputs_of_case[name], *written_by_nnunet]
        write_record(output, settings, predicted, [name_in(output, path) for path in writing])
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
