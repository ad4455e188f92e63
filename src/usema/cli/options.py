"""What several commands share: the device option, JSON settings, KEY=JSON plan edits, MODEL=JSON network settings,
placements, and the warning an old spelling of an option gives."""

from __future__ import annotations

import argparse
import json
import math
import re
import warnings

from usema.errors import UsemaError

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_name(text: str) -> str:
    """A --device value as typed: auto, cpu, cuda or cuda:N (argparse names the option when it is none)."""
    name = text.strip().lower()
    if not _DEVICE.fullmatch(name):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: choose auto, cpu, cuda or cuda:N")
    return name


def positive_number(text: str) -> float:
    """A positive, finite number as typed (argparse names the option when it is none: 0, -1, nan, inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive, finite number")
    return value


def count_from(low: int):
    """An argparse type: an integer of at least `low` as typed."""

    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {low}")
        return value

    count.__name__ = f"integer >= {low}"
    return count


def fold_name(text: str) -> int | str:
    """An argparse type: a fold number as typed, or 'all' (nnU-Net's fold_all, trained on every case)."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return count_from(0)(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fold: an integer >= 0, or 'all' (nnU-Net's "
                                         "fold_all)") from err


def add_device(parser: argparse.ArgumentParser, what: str = "run", more: str = "") -> None:
    """The --device option: auto (CUDA when there is one), cpu, cuda or cuda:N (`more` adds to its help), and
    --threads, the CPU threads torch may use (`main` applies it before the command runs)."""
    parser.add_argument(
        "--device",
        default="auto",
        type=device_name,
        metavar="auto|cpu|cuda|cuda:N",
        help=f"where to {what} (default: auto, CUDA when there is one){more}",
    )
    parser.add_argument(
        "--threads",
        type=count_from(1),
        default=None,
        metavar="N",
        help="CPU threads torch may use (default: torch's choice, about one per core); e.g. 1 to run two jobs "
        "side by side on a two-core machine",
    )


def add_plan_edits(parser: argparse.ArgumentParser, example: str = "patch_size=[32,32] batch_size=8") -> None:
    """The --plan KEY=JSON option: settings that replace what the planner would choose."""
    parser.add_argument(
        "--plan",
        nargs="+",
        default=[],
        metavar="KEY=JSON",
        help=f"plan settings that replace the planner's choice, e.g. {example} "
        "'network_settings={\"base_features\": 16}' (keys: patch_size, batch_size, target_spacing, "
        "network_settings (its older name model_overrides warns), case_ids, max_cases, and the training keys "
        "epochs, iters_per_epoch, optimizer, lr, val_max_cases, ...)",
    )


def placement(text: str) -> str | int | list[int]:
    """A placement as typed: counts ("0", "0,0,1,1") become numbers, a name stays a name."""
    counts = [part.strip() for part in text.split(",")]
    if all(count.isdigit() for count in counts):
        return int(counts[0]) if len(counts) == 1 else [int(count) for count in counts]
    return text.strip()


def json_value(text: str, flag: str) -> object:
    """`text` parsed as JSON; UsemaError naming `flag` when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UsemaError(f"{flag} {text!r}: not JSON ({err})") from err


def json_object(text: str, flag: str) -> dict:
    """`text` parsed as a JSON object of settings."""
    value = json_value(text, flag)
    if not isinstance(value, dict):
        raise UsemaError(f"{flag}: expected a JSON object of settings, got {value!r}")
    return value


def key_json(items: list[str], flag: str, want: str) -> dict:
    """KEY=JSON items as a dict."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsemaError(f"{flag} {item!r}: expected {want}=JSON")
        parsed[key] = json_value(value, f"{flag} {key}")
    return parsed


def add_network_settings(parser: argparse.ArgumentParser, example: str, more: str = "") -> None:
    """The --network-settings MODEL=JSON option: network settings (a plan's `model.network_settings`) for one
    model only, read by `network_settings`."""
    parser.add_argument("--network-settings", nargs="*", default=[], metavar="MODEL=JSON",
                        help=f"network settings for one model only, e.g. {example}{more}")


def network_settings(items: list[str], flag: str = "--network-settings") -> dict[str, dict]:
    """MODEL=JSON items as {model: network settings}; UsemaError naming `flag` when a value is not a JSON
    object."""
    per_model = key_json(items, flag, "MODEL")
    for model, value in per_model.items():
        if not isinstance(value, dict):
            raise UsemaError(f"{flag} {model}: expected a JSON object of network settings, got {value!r}")
    return per_model


def warn_deprecated(old: str, new: str) -> None:
    """The FutureWarning of an option's old spelling, accepted for one release."""
    warnings.warn(f"{old} is deprecated: use {new}", FutureWarning, stacklevel=2)
