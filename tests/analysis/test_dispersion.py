"""Attention dispersion: statistics against dense weight matrices, and the command end to end on a tiny run."""

import csv
import itertools
import math

import pytest
import torch

from usema.analysis.dispersion import AttentionRecorder, attention_statistics, centre_crop
from usema.cli import main
from usema.data.phantoms import make_phantom_dataset
from usema.models import build_model
from usema.planning.planner import plan_dataset
from usema.training.run_training import train


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test of this folder runs on one thread (tests/conftest.py)."""


def dense_statistics(a, rows=None):
    """(heads,) largest |a - 1/n| and mean entropy / log n of row-stochastic (heads, n, n) weights, over the
    query `rows` (a bool mask; all by default)."""
    n = a.shape[-1]
    rows = torch.ones(n, dtype=torch.bool) if rows is None else rows
    a = a[:, rows]
    entropy = -(a * a.clamp_min(1e-300).log()).sum(-1).mean(-1) / math.log(n)
    return (a - 1 / n).abs().amax(dim=(1, 2)), entropy


def dense_window_softmax(q, k, spatial_shape, window):
    """(heads, n, n) softmax restricted to each token's window, built token by token, and the (n,) mask of the
    tokens whose window is complete (not cut by the map's edge)."""
    coords = list(itertools.product(*(range(s) for s in spatial_shape)))
    cell = [tuple(c // w for c, w in zip(coord, window)) for coord in coords]
    same = torch.tensor([[ci == cj for cj in cell] for ci in cell])
    complete = same.sum(-1) == math.prod(window)
    logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(logits.masked_fill(~same, float("-inf")), dim=-1), complete


def test_full_statistics_equal_the_dense_softmax():
    torch.manual_seed(0)
    q, k = torch.randn(2, 12, 4, dtype=torch.float64), torch.randn(2, 12, 4, dtype=torch.float64)
    largest, entropy = attention_statistics(q, k, (3, 4), "full")
    expected_largest, expected_entropy = dense_statistics(torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1))
    torch.testing.assert_close(largest, expected_largest.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(entropy, expected_entropy.double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode, uniform_share", [("sema", 0.5), ("window", 0.0)])
def test_window_statistics_equal_the_dense_weights_over_complete_windows(mode, uniform_share):
    torch.manual_seed(1)
    shape, window = (5, 6), (3, 4)  # neither axis is a whole number of windows
    q, k = torch.randn(2, 30, 4), torch.randn(2, 30, 4)
    largest, entropy = attention_statistics(q, k, shape, mode, window)
    softmax, complete = dense_window_softmax(q.double(), k.double(), shape, window)
    assert 0 < complete.sum() < 30  # windows cut by the edge are left out
    expected_largest, expected_entropy = dense_statistics((1 - uniform_share) * softmax + uniform_share / 30, complete)
    torch.testing.assert_close(largest, expected_largest, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(entropy, expected_entropy, rtol=1e-4, atol=1e-6)


def test_equal_keys_give_uniform_full_attention_but_not_sema():
    q, k = torch.randn(1, 64, 8), torch.zeros(1, 64, 8)
    largest, entropy = attention_statistics(q, k, (8, 8), "full")
    assert largest.item() < 1e-6 and entropy.item() == pytest.approx(1.0, abs=1e-6)
    largest, entropy = attention_statistics(q, k, (8, 8), "sema", 4)
    # uniform inside each 4x4 window: weight (1/16 + 1/64) / 2 = 5/128 there (3/128 above 1/64), 1/128 outside
    assert largest.item() == pytest.approx(3 / 128, rel=1e-5)
    assert entropy.item() < 0.95
    with pytest.raises(Exception, match="no weights"):
        attention_statistics(q, k, (8, 8), "linear")


def test_recorder_reads_every_attention_block_and_detaches():
    model = build_model("usema", 2, 1, 2, base_features=8, max_features=16, blocks_per_stage=1, head_dim=8,
                        strides=[1, 2, 2], sema_per_stage="all")
    with AttentionRecorder(model) as recorder, torch.inference_mode():
        model(torch.randn(1, 1, 20, 24))
    assert len(recorder.blocks) == 3 and all(b.attention_probe is None for b in recorder.blocks)
    tokens = sorted({r["tokens"] for r in recorder.records})
    assert tokens == [5 * 6, 10 * 12, 20 * 24]  # one block per stage, stride 2 between stages
    assert all(0 <= r["max_deviation"] <= 1 and 0 < r["entropy_ratio"] <= 1 + 1e-6 for r in recorder.records)


def test_centre_crop_refuses_small_images():
    image = torch.arange(2 * 6 * 8).reshape(2, 6, 8).numpy()
    assert centre_crop(image, 4).shape == (2, 4, 4) and centre_crop(image, 4)[0, 0, 0] == image[0, 1, 2]
    assert centre_crop(image, 7) is None


def test_analyze_dispersion_command_on_trained_runs(tmp_path):
    data = make_phantom_dataset(tmp_path / "phantoms", spatial_dims=2, num_cases=4, shape=(40, 40), seed=2)
    runs = []
    for model in ("usema", "usema-full"):
        run = tmp_path / model
        plan_dataset(data, run, model=model, device="cpu", patch_size=[32, 32], batch_size=2,
                     network_settings={"base_features": 8, "max_features": 16, "blocks_per_stage": 1,
                                      "head_dim": 8, "strides": [[1, 1], [2, 2]]})
        train(data, run, model=model, folds=2, epochs=1, iters_per_epoch=2, device="cpu")
        runs.append(str(run))
    out = tmp_path / "dispersion"
    args = ["analyze", "dispersion", "--runs", *runs, "--sizes", "16", "32", "--max-images", "1", "-o", str(out),
            "--device", "cpu", str(data / "images")]
    assert main(args) == 0
    with (out / "dispersion.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    keys = {(r["model"], r["state"], int(r["tokens"])) for r in rows}
    for model in ("usema", "usema-full"):
        for state in ("untrained", "trained"):
            assert {(model, state, n) for n in (64, 256, 1024)} <= keys  # 16^2/2^2 ... 32^2 tokens
    untrained = [r for r in rows if r["state"] == "untrained"]
    trained = [r for r in rows if r["state"] == "trained"]
    assert [r["max_deviation"] for r in untrained] != [r["max_deviation"] for r in trained]
    report = (out / "dispersion.md").read_text()
    assert "Command: `usema analyze dispersion" in report and "| usema-full | trained | 0 | 1024 |" in report
    assert (out / "dispersion.png").stat().st_size > 1000
