"""What several commands share: the device option, JSON settings, KEY=JSON plan edits, placements."""

from __future__ import annotations

import argparse
import json
import math
import re

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


def add_device(parser: argparse.ArgumentParser, what: str = "run", more: str = "") -> None:
    """The --device option: auto (CUDA when there is one), cpu, cuda or cuda:N; `more` adds to its help."""
    parser.add_argument(
        "--device",
        default="auto",
        type=device_name,
        metavar="auto|cpu|cuda|cuda:N",
        help=f"where to {what} (default: auto, CUDA when there is one){more}",
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
        "network_settings (or its older name model_overrides), case_ids, max_cases, and the training keys "
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
