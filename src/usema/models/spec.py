"""`NetworkSpec`: a network as data (preset, dimensions, channels, classes, network settings) and the one way
to build it.

Plans hand it out (`Plans.network`), checkpoints store it beside the weights (its `to_dict()`, their "model"
entry), and `usema models`, `usema bench efficiency` and the nnU-Net integration build their networks from
it. A description of an older layout is read in the current one by `current_layout`: plans version 1 named
the network settings "overrides". What depends on the version of the plans a description was made with (the
SEMA placement of plans before version 3) is `usema.planning.schema`'s.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from usema.errors import UsemaError

# The older names of a description's keys, with their current ones: plans version 1 named the network
# settings "overrides" (a plan's "model" section and a checkpoint's "model" entry alike).
RENAMED_KEYS = {"overrides": "network_settings"}
_REQUIRED = ("name", "spatial_dims", "in_channels", "num_classes")


def current_layout(description: Mapping[str, Any]) -> dict[str, Any]:
    """A network description, or a plan's "model" section, with its keys under their current names (a copy;
    the input is left alone)."""
    current = dict(description)
    for old, new in RENAMED_KEYS.items():
        if old in current:
            current[new] = current.pop(old)
    return current


@dataclass(frozen=True)
class NetworkSpec:
    """A network of the model registry (usema.models.registry): preset `name`, built for `spatial_dims`-D
    inputs of `in_channels` channels with `num_classes` output classes (its out channels), `network_settings`
    added to the preset's keyword arguments (strides, widths, SEMA placement and windows, ...).

    `deep_supervision` is what a checkpoint's network was trained with (None where the description does not
    say: a plan's network, which training builds with or without it)."""

    name: str
    spatial_dims: int
    in_channels: int
    num_classes: int
    network_settings: dict[str, Any] = field(default_factory=dict)
    deep_supervision: bool | None = None

    def __post_init__(self) -> None:
        # a copy of its own: the caller's dict may change afterwards, this description does not
        object.__setattr__(self, "network_settings", copy.deepcopy(dict(self.network_settings)))

    # ------------------------------------------------------------------------------------------------ data
    def to_dict(self) -> dict[str, Any]:
        """The description as checkpoints store it: name, spatial_dims, in_channels, num_classes,
        network_settings, and deep_supervision where it is known."""
        description = {
            "name": self.name,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "network_settings": copy.deepcopy(self.network_settings),
        }
        if self.deep_supervision is not None:
            description["deep_supervision"] = self.deep_supervision
        return description

    @classmethod
    def from_dict(cls, description: Any) -> NetworkSpec:
        """The description `to_dict` makes, or one of an older layout (`current_layout`); UsemaError naming
        what is missing or malformed."""
        if not isinstance(description, Mapping):
            raise UsemaError(f"a network description must be a mapping, not {type(description).__name__}")
        current = current_layout(description)
        missing = [key for key in _REQUIRED if key not in current]
        if missing:
            raise UsemaError(f"the network description has no {', '.join(map(repr, missing))}")
        settings = current.get("network_settings", {})
        if not isinstance(settings, Mapping) or not isinstance(current["name"], str):
            raise UsemaError("the network description's name must be a string and its network_settings a mapping")
        try:
            counts = {key: int(current[key]) for key in _REQUIRED[1:]}
        except (TypeError, ValueError) as err:
            raise UsemaError(f"the network description's dimensions and channels must be integers ({err})") from err
        supervised = current.get("deep_supervision")
        return cls(
            name=current["name"],
            network_settings=dict(settings),
            deep_supervision=None if supervised is None else bool(supervised),
            **counts,
        )

    def difference_from(self, other: NetworkSpec) -> str | None:
        """The first entry of this description that `other` holds otherwise, as "KEY=OTHER'S, expected THIS'S"
        (deep_supervision only where this one names it); None when they agree."""
        theirs = other.to_dict()
        for key, value in self.to_dict().items():
            if theirs.get(key) != value:
                return f"{key}={theirs.get(key)!r}, expected {value!r}"
        return None

    # -------------------------------------------------------------------------------------------- building
    def build(self, deep_supervision: bool | None = None):
        """The network, untrained (an nn.Module); `deep_supervision` replaces the description's (which, when
        not known, is without)."""
        from usema.models import registry  # the registry's module attribute: tests replace build_model

        return self._with_registry(registry.build_model, deep_supervision)

    def builder_call(self, deep_supervision: bool | None = None) -> tuple[Callable[..., Any], dict[str, Any]]:
        """(builder, keyword arguments) that `build` calls, the settings checked: for a subclass of the
        builder that must construct itself (nnU-Net builds its network from a class it imports)."""
        from usema.models import registry

        return self._with_registry(registry.builder_call, deep_supervision)

    def _with_registry(self, function: Callable[..., Any], deep_supervision: bool | None) -> Any:
        """`function` of the registry (build_model, builder_call) called with this description."""
        if deep_supervision is None:
            deep_supervision = self.deep_supervision
        return function(self.name, self.spatial_dims, self.in_channels, self.num_classes,
                        deep_supervision=bool(deep_supervision), **self.network_settings)
