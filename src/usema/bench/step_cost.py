"""The training-step cost of every model of an accuracy study, measured once, interleaved, in one process.

An equal-steps comparison is fair in steps but not in compute when one model's step costs more. The cost is
measured here, never taken from the runs' wall clock (which a busy machine bends): each model's own trainer
(its plan's network, patch, batch, augmentation and precision) on a random case, one step of each model in
turn, so that a change in the machine's load touches every model alike. Run it on an otherwise idle machine;
the load average before and after is stored with the result.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from pathlib import Path
from typing import Any

import torch

from usema.planning import Plans
from usema.training.timing import timing_trainer  # the trainer's own step is what this measures

# Where our model's step costs more than this times a control's, the control also trains the steps that our
# model's budget buys at its cost (equal compute, derived from the measured step costs).
EQUAL_COMPUTE_RATIO = 1.10
WARMUP_STEPS = 2
# A CPU step's time spreads by about a tenth from round to round, and the 1.10 cost ratio that adds an
# equal-compute control sits close to the measured ratios: the median of 7 rounds put two datasets' ratios
# (kvasir_seg, chaos_mr_t2) on either side of it in two idle measurements, so the study takes the median of 21.
STUDY_ROUNDS = 21


def measure_step_costs(plans_by_label: dict[str, Plans], device: torch.device,
                       rounds: int = STUDY_ROUNDS) -> dict[str, Any]:
    """Seconds of one training step per label (median over `rounds`, each round one step of every model in
    turn, after WARMUP_STEPS untimed steps each), every sample, and the load average around the measurement."""
    load_before = os.getloadavg()[0]
    samples: dict[str, list[float]] = {label: [] for label in plans_by_label}
    with contextlib.ExitStack() as stack:
        steps = {label: stack.enter_context(timing_trainer(plans, device))[1]
                 for label, plans in plans_by_label.items()}
        for step in steps.values():
            for _ in range(WARMUP_STEPS):
                step()
        for _ in range(rounds):
            for label, step in steps.items():
                samples[label].append(step())
    return {
        "seconds_per_step": {label: statistics.median(values) for label, values in samples.items()},
        "samples": samples,
        "rounds": rounds,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }


def cost_ratios(measured: dict[str, Any], ours: str = "usema") -> dict[str, float]:
    """How many times a step of `ours` costs a step of each other label: the median over rounds of the ratio
    within a round. Within a round the steps run back to back, so a change of the machine's speed between rounds
    (a shared host's neighbours) cancels; the ratio of the per-model medians does not cancel it, and two idle
    measurements of chaos_mr_t2 on one kind of machine put that on either side of 1.10 (benchmarks/cv/README.md).
    Empty where `ours` was not measured."""
    return {label: statistics.median(ratios) for label, ratios in _round_ratios(measured, ours).items()}


def _round_ratios(measured: dict[str, Any], ours: str) -> dict[str, list[float]]:
    """Per label other than `ours`, our step's time over its step's time within each round."""
    samples = measured["samples"]
    if ours not in samples:
        return {}
    return {label: [a / b for a, b in zip(samples[ours], values, strict=True)]
            for label, values in samples.items() if label != ours}


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval of the median of `values` (order statistics of the binomial sign test, at
    least `confidence`); None where there are too few values for one (fewer than 6 at 95%)."""
    from scipy import stats

    ordered, n = sorted(values), len(values)
    # the largest rank k with P(Binomial(n, 1/2) <= k - 1) <= (1 - confidence) / 2: [x_(k), x_(n-k+1)]
    k = 0
    while stats.binom.cdf(k, n, 0.5) <= (1 - confidence) / 2:
        k += 1
    return None if k == 0 else (ordered[k - 1], ordered[n - k])


def ratio_intervals(measured: dict[str, Any], ours: str = "usema") -> dict[str, tuple[float, float] | None]:
    """The 95% interval of each of `cost_ratios`' medians over the rounds: how far the measurement's own noise
    could move the ratio that decides equal compute."""
    return {label: median_interval(ratios) for label, ratios in _round_ratios(measured, ours).items()}


def equal_compute_steps(steps: int, cost_ratio: float, iters_per_epoch: int) -> int:
    """The steps a control trains in the compute that `steps` of our model cost, `cost_ratio` being our step's
    cost over the control's, rounded to whole epochs."""
    epochs = max(1, round(steps * cost_ratio / iters_per_epoch))
    return epochs * iters_per_epoch


def step_cost_path(output: Path, name: str) -> Path:
    """Where the step costs of dataset `name` are stored beside its report."""
    return Path(output) / f"step_cost_{name}.json"
