"""Channel counts: what an image must have, and the one conversion allowed, gray <-> RGB of a colour photograph.

A volume's channels are modalities, echoes or time points: averaging them with colour weights, or copying one
into the place of another, makes an input the network was never meant to see. Only a 2D colour photograph
(PNG, JPEG, TIFF, BMP; Pillow and tifffile already drop the alpha channel of RGBA) is converted; any other
count that differs from the declared one is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from pathlib import Path

import numpy as np

from usema.data.io import FORMAT_OF_SUFFIX, ImageGeometry
from usema.errors import DataError
from usema.utils.text import counted

PHOTO_FORMATS = ("png", "jpeg", "tiff", "bmp")
# ITU-R BT.601 luma weights: how an RGB photograph becomes one gray channel.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def channel_names_for(count: int) -> list[str]:
    """Names for `count` undeclared channels (gray, RGB, or numbered)."""
    return (
        ["gray"] if count == 1 else ["R", "G", "B"] if count == 3 else [f"channel_{i}" for i in range(count)]
    )


def holds_every_channel(channel_numbers: Collection[int], num_channels: int, suffix: str) -> bool:
    """Whether an nnU-Net case of `channel_numbers` (the NNNN of its CASE_NNNN files) is one file of all
    `num_channels` channels: nnU-Net keeps a file per channel except for RGB natural images, whose one
    CASE_0000 photograph (PNG, BMP, TIFF, JPEG) holds them all. Its header then says how many it holds."""
    is_photo = FORMAT_OF_SUFFIX.get(suffix.lower()) in PHOTO_FORMATS
    return num_channels > 1 and set(channel_numbers) == {0} and is_photo


def is_convertible(have: int, want: int, geometry: ImageGeometry) -> bool:
    """Whether an image of `have` channels may be converted to `want`: a 2D photograph, gray <-> RGB."""
    return geometry.format in PHOTO_FORMATS and geometry.spatial_dims == 2 and {have, want} == {1, 3}


def check_channels(have: int, want: int, geometry: ImageGeometry, source: str | Path) -> None:
    """DataError naming `source` unless an image of `have` channels serves where `want` are declared: the same
    count, or a photograph that `convert_channels` converts."""
    if have != want and not is_convertible(have, want, geometry):
        raise DataError(
            source,
            f"has {counted(have, 'channel')} but {want} {'is' if want == 1 else 'are'} declared; only 2D colour "
            "photographs (PNG, JPEG, TIFF, BMP) are converted, between RGB and gray",
        )


def convert_channels(
    image: np.ndarray, num_channels: int, geometry: ImageGeometry, source: str | Path, warn: bool = True
) -> np.ndarray:
    """(C, *S) with `num_channels` channels: unchanged when C agrees, a photograph's RGB -> gray (luma) or
    gray -> RGB (repeated), with a warning when `warn`; any other mismatch raises DataError naming `source`."""
    have = image.shape[0]
    if have == num_channels:
        return image
    check_channels(have, num_channels, geometry, source)
    if have == 3:
        converted = np.tensordot(_LUMA, image, axes=1)[None].astype(np.float32)
    else:
        converted = np.repeat(image, num_channels, axis=0)
    if warn:
        warnings.warn(
            f"{source}: {counted(have, 'channel')} converted to {num_channels} (colour photograph)", stacklevel=2
        )
    return converted
