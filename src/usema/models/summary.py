"""`usema models`: the presets with their parameter counts in 2D and 3D."""

from __future__ import annotations

from usema.models.registry import list_models, load_presets
from usema.models.spec import NetworkSpec


def count_parameters(model) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_table(in_channels: int = 1, num_classes: int = 3) -> list[dict]:
    """One row per preset: name, description and parameter counts of the 2D and 3D networks."""
    rows = []
    presets = load_presets()
    for name in list_models():
        row = {"model": name, "description": presets[name].get("description", "")}
        for dims in (2, 3):
            try:
                model = NetworkSpec(name, dims, in_channels, num_classes).build()
                row[f"params_{dims}d"] = count_parameters(model)
            except (ValueError, NotImplementedError, ImportError) as err:  # lacks this dimension or a package
                row[f"params_{dims}d"] = None
                row[f"note_{dims}d"] = str(err)
        rows.append(row)
    return rows


def print_model_table() -> None:
    """Print the model table (2D: 2D network, 1 input channel, 3 classes; 3D likewise)."""
    rows = model_table()
    print(f"{'model':<16} {'params 2D':>11} {'params 3D':>11}  description")
    for row in rows:
        p2 = f"{row['params_2d'] / 1e6:.2f}M" if row["params_2d"] is not None else "n/a"
        p3 = f"{row['params_3d'] / 1e6:.2f}M" if row["params_3d"] is not None else "n/a"
        print(f"{row['model']:<16} {p2:>11} {p3:>11}  {row['description']}")
