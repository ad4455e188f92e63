"""`usema analyze dispersion`: how far attention weights are from uniform as the number of tokens grows.

The paper's Figure 1 made measurable (docs/sema.md, section 1). For each trained run and a freshly initialised
copy of its network, real images are centre-cropped to growing sizes and passed through the network; every
attention block reports, per head, the largest |a_ij - 1/n| over its queries and keys and the mean row entropy
relative to log n (1 means uniform weights: dispersed).

The weights compared are each model's mixing weights over all n tokens:
- `full`: softmax over all n keys.
- `sema`: the window softmax s plus the mean term, a_ij = (s_ij + 1/n) / 2 (SEMA adds the two with weight 1 each;
  halving makes the row sum 1 without changing how far it is from uniform in shape).
- `window`: the window softmax alone, zero outside the window.
For the windowed modes only queries of complete windows count: a window cut by the map's edge holds fewer real
keys (a corner window may hold one), which would make the largest deviation depend on how the map size divides
by the window rather than on the attention.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usema.errors import UsemaError
from usema.nn import SEMABlock
from usema.nn.attention import window_softmax_weights
from usema.utils.atomic import atomic_path, atomic_write_text
from usema.utils.provenance import provenance, provenance_markdown

DEFAULT_SIZES = {2: [64, 128, 256, 512], 3: [16, 24, 32, 40]}
ANALYZED_MODES = ("full", "sema", "window")
# Logits of full attention are built a block of queries at a time, at most this many elements per block.
CHUNK_ELEMENTS = 2**24
FIELDS = ["model", "state", "image", "input_size", "block", "tokens", "head", "max_deviation", "entropy_ratio"]


def _full_statistics(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(heads,) largest |a - 1/n| and mean entropy / log n of softmax(q k^T / sqrt(d)) over all n keys."""
    heads, n, d = q.shape
    rows = max(1, CHUNK_ELEMENTS // (heads * n))
    largest = torch.zeros(heads, dtype=torch.float64)
    entropy = torch.zeros(heads, dtype=torch.float64)
    for start in range(0, n, rows):
        log_a = torch.log_softmax(torch.matmul(q[:, start : start + rows], k.transpose(-1, -2)) * d**-0.5, -1)
        a = log_a.exp()
        largest = torch.maximum(largest, (a - 1.0 / n).abs().amax(dim=(1, 2)).double())
        entropy += -(a * log_a).sum(dim=(1, 2)).double()
    return largest, entropy / (n * math.log(n))


def _window_statistics(
    q: torch.Tensor, k: torch.Tensor, spatial_shape: Sequence[int], window_size: Any, uniform_share: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same statistics for a_ij = (1 - u) s_ij + u / n, s the window softmax, u = `uniform_share`, over the
    queries of complete windows."""
    heads, n, _ = q.shape
    s, mask = window_softmax_weights(q[None], k[None], spatial_shape, window_size)  # (heads, W, t, t)
    keys = torch.ones(s.shape[1:3], dtype=torch.bool) if mask is None else mask  # (W, t) real tokens
    inside = (1 - uniform_share) * s.double() + uniform_share / n
    real_key = keys[None, :, None, :]
    deviation = torch.where(real_key, (inside - 1.0 / n).abs(), torch.zeros((), dtype=torch.float64))
    log_inside = torch.where(real_key, inside.clamp_min(1e-300).log(), torch.zeros((), dtype=torch.float64))
    row_entropy = -(inside * log_inside * real_key).sum(-1)  # (heads, W, t)
    outside = n - keys.sum(-1, keepdim=True).double()  # keys outside each query's window: (W, 1)
    outside_weight = uniform_share / n
    if outside_weight > 0:
        row_entropy = row_entropy - outside * outside_weight * math.log(outside_weight)
    row_deviation = deviation.amax(-1)
    # keys outside the window sit at u/n, 1/n - u/n away from uniform
    row_deviation = torch.where(outside > 0, row_deviation.clamp_min(abs(1 - uniform_share) / n), row_deviation)
    counted = (keys & keys.all(dim=-1, keepdim=True))[None]  # queries of complete windows (module docstring)
    largest = torch.where(counted, row_deviation, torch.zeros((), dtype=torch.float64)).amax(dim=(1, 2))
    entropy = (row_entropy * counted).sum(dim=(1, 2)) / (counted.sum() * math.log(n))
    return largest, entropy


def attention_statistics(
    q: torch.Tensor, k: torch.Tensor, spatial_shape: Sequence[int], mode: str, window_size: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head, the largest |a_ij - 1/n| and the mean row entropy / log n of the attention weights a that
    `mode` ("full", "sema" or "window") gives queries and keys q, k of shape (heads, n, head_dim)."""
    q, k = q.float(), k.float()
    if mode == "full":
        return _full_statistics(q, k)
    if mode in ("sema", "window"):
        return _window_statistics(q, k, spatial_shape, window_size, 0.5 if mode == "sema" else 0.0)
    raise UsemaError(f"attention mode {mode!r} has no weights to analyse; choose one of {ANALYZED_MODES}")


class AttentionRecorder:
    """While active, every SEMA block of `model` adds its attention statistics (batch item 0) to `records`."""

    def __init__(self, model: torch.nn.Module):
        self.blocks = [m for m in model.modules() if isinstance(m, SEMABlock) and m.mode in ANALYZED_MODES]
        self.records: list[dict[str, Any]] = []

    def _probe(self, index: int):
        def probe(block: SEMABlock, q: torch.Tensor, k: torch.Tensor, spatial_shape: Sequence[int]) -> None:
            largest, entropy = attention_statistics(q[0], k[0], spatial_shape, block.mode, block.window_size)
            for head in range(len(largest)):
                self.records.append({"block": index, "tokens": q.shape[2], "head": head,
                                     "max_deviation": float(largest[head]), "entropy_ratio": float(entropy[head])})
        return probe

    def __enter__(self) -> AttentionRecorder:
        for index, block in enumerate(self.blocks):
            block.attention_probe = self._probe(index)
        return self

    def __exit__(self, *exc: object) -> None:
        for block in self.blocks:
            block.attention_probe = None


def centre_crop(image: np.ndarray, size: int) -> np.ndarray | None:
    """The central size^d crop of a (C, *S) image, or None where an axis is shorter than `size`."""
    spatial = image.shape[1:]
    if min(spatial) < size:
        return None
    starts = [(s - size) // 2 for s in spatial]
    return image[(slice(None), *(slice(b, b + size) for b in starts))]


def _networks(run: Path, checkpoint: str, device: str, seed: int):
    """(name, plans, [("untrained", net), ("trained", net)]) for a training run."""
    import usema

    predictor = usema.load(run, checkpoint=checkpoint, fold=0, device=device)
    plans = predictor.plans
    torch.manual_seed(seed)
    fresh = plans.network.build()
    networks = [("untrained", fresh.to(predictor.device).eval()), ("trained", predictor.model)]
    return plans.model_name, plans, networks


def analyze_dispersion(
    runs: Sequence[str | Path],
    inputs: Sequence[str | Path],
    output: str | Path = "benchmarks/dispersion",
    sizes: Sequence[int] | None = None,
    max_images: int = 2,
    checkpoint: str = "latest",
    device: str = "auto",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Attention dispersion of each run's network, untrained and trained, on centre crops of growing size of the
    images in `inputs`; writes dispersion.csv (per head), dispersion.md (head means) and dispersion.png."""
    from usema.data import convert_channels, read_image
    from usema.inference import collect_cases
    from usema.preprocessing import preprocess_image

    rows: list[dict[str, Any]] = []
    for run in runs:
        name, plans, networks = _networks(Path(run), checkpoint, device, seed)
        if not any(AttentionRecorder(net).blocks for _, net in networks):
            raise UsemaError(f"{run}: model {name!r} has no full, SEMA or window attention blocks to analyse")
        dims = plans.spatial_dims
        crop_sizes = sorted(sizes or DEFAULT_SIZES[dims])
        images = []
        for case in collect_cases(inputs, plans):
            image, geometry = read_image(case.images)
            image = convert_channels(image, plans.dataset.num_channels, geometry, case.images[0],
                                     warn=False)
            image = preprocess_image(image, geometry, plans)
            if centre_crop(image, crop_sizes[-1]) is not None:  # every image is seen at every size
                images.append((case.case_id, image))
            if len(images) == max_images:
                break
        if not images:
            raise UsemaError(f"no input image is at least {crop_sizes[-1]} pixels or voxels along every axis")
        for state, network in networks:
            for case_id, image in images:
                for size in crop_sizes:
                    crop = centre_crop(image, size)
                    batch = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None]
                    with AttentionRecorder(network) as recorder, torch.inference_mode():
                        network(batch.to(next(network.parameters()).device))
                    for record in recorder.records:
                        rows.append({"model": name, "state": state, "image": case_id, "input_size": size, **record})
            print(f"{name} {state}: {sum(1 for r in rows if r['model'] == name and r['state'] == state)} rows")
    write_dispersion_report(rows, Path(output), provenance())
    return rows


def head_means(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows averaged over heads and images per (model, state, block, tokens), with the worst head's deviation."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["model"], row["state"], int(row["block"]), int(row["tokens"]))].append(row)
    means = []
    for (model, state, block, tokens), members in sorted(groups.items()):
        means.append({
            "model": model, "state": state, "block": block, "tokens": tokens,
            "max_deviation": float(np.mean([float(m["max_deviation"]) for m in members])),
            "worst_head": float(np.max([float(m["max_deviation"]) for m in members])),
            "entropy_ratio": float(np.mean([float(m["entropy_ratio"]) for m in members])),
            "uniform": 1.0 / tokens, "samples": len(members),
        })
    return means


def _series(means: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Head means grouped by (model, state, block), each ordered by token count."""
    grouped: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for m in sorted(means, key=lambda m: m["tokens"]):
        grouped[(m["model"], m["state"], m["block"])].append(m)
    return grouped


def _trend(means: list[dict[str, Any]]) -> str:
    """One generated sentence per (model, state), for its first attention block (the most tokens): deviation at
    the fewest and most tokens, and its log-log slope."""
    lines = []
    for (model, state, block), series in sorted(_series(means).items()):
        if block != min(m["block"] for m in means if (m["model"], m["state"]) == (model, state)) or len(series) < 2:
            continue
        first, last = series[0], series[-1]
        slope = np.polyfit(np.log([m["tokens"] for m in series]), np.log([m["max_deviation"] for m in series]), 1)[0]
        lines.append(
            f"- {model} ({state}), block {block}: max|a - 1/n| {first['max_deviation']:.3g} at n = {first['tokens']}"
            f" -> {last['max_deviation']:.3g} at n = {last['tokens']} (log-log slope {slope:.2f}; -1 is dispersion"
            f" at the 1/n rate); entropy / log n {first['entropy_ratio']:.3f} -> {last['entropy_ratio']:.3f}."
        )
    return "\n".join(lines)


def write_dispersion_report(rows: Sequence[dict[str, Any]], output: Path, prov: dict) -> None:
    """dispersion.csv (every head), dispersion.md (head means, trends, provenance) and dispersion.png."""
    output.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in FIELDS})
    atomic_write_text(output / "dispersion.csv", buffer.getvalue())
    means = head_means(rows)
    lines = ["# Attention dispersion", "", provenance_markdown(prov), "",
             "Largest |a - 1/n| over queries and keys (mean over heads and images; worst head beside it) and mean "
             "row entropy relative to log n, per attention block (0 = the highest-resolution one) and token count "
             "n, as centre crops of the images grow. SEMA's weights are its window softmax plus the mean term, "
             "(s + 1/n) / 2, counted over the queries of complete windows. One line per block in the plot.", "",
             "| model | state | block | tokens n | max abs(a - 1/n) | worst head | 1/n | entropy / log n | samples |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in means:
        lines.append(f"| {m['model']} | {m['state']} | {m['block']} | {m['tokens']} | {m['max_deviation']:.3g} | "
                     f"{m['worst_head']:.3g} | {m['uniform']:.3g} | {m['entropy_ratio']:.3f} | {m['samples']} |")
    lines += ["", _trend(means), "", "![dispersion](dispersion.png)"]
    atomic_write_text(output / "dispersion.md", "\n".join(lines) + "\n")
    _plot(means, output / "dispersion.png")


def _plot(means: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {}
    for (model, state, _block), series in sorted(_series(means).items()):
        key = (model, state)
        first_line = key not in colours
        colours.setdefault(key, f"C{len(colours)}")
        style = {"color": colours[key], "linestyle": "-" if state == "trained" else "--", "marker": "o",
                 "label": f"{model} ({state})" if first_line else None}
        n = [m["tokens"] for m in series]
        left.plot(n, [m["max_deviation"] for m in series], **style)
        right.plot(n, [m["entropy_ratio"] for m in series], **style)
    if means:
        n = sorted({m["tokens"] for m in means})
        left.plot(n, [1 / t for t in n], ":", color="gray", label="1/n")
    left.set(xscale="log", yscale="log", xlabel="tokens n", ylabel="max |a - 1/n|", title="distance from uniform")
    right.set(xscale="log", xlabel="tokens n", ylabel="entropy / log n", title="entropy (1 = uniform)")
    left.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
