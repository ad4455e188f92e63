"""Deterministic k-fold cross-validation splits, optionally keeping groups of cases (e.g. one patient) together,
and the held-out cases that in-training validation scores."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from usema.errors import DataError, UsemaError
from usema.utils.atomic import atomic_path

SPLITS_NAME = "splits.json"
# RUN/fold_K/VALIDATION_NAME: the cases in-training validation scores, as drawn
VALIDATION_NAME = "validation_cases.json"
# The validation subset's seed is fixed, not the training seed: every model trained on a split validates on
# the same cases, so their validation curves and best checkpoints compare.
VALIDATION_SEED = 0


def read_groups_csv(path: str | Path, case_ids: Sequence[str]) -> dict[str, str]:
    """Read `case_id,group` rows (a header row is optional); every case id must belong to the dataset."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "groups file not found")
    known = set(case_ids)
    groups: dict[str, str] = {}
    with path.open(newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise DataError(path, f"line {line_number}: expected 2 columns case_id,group, got {len(row)}")
            case_id, group = row[0].strip(), row[1].strip()
            if line_number == 1 and case_id.lower() in ("case_id", "case") and case_id not in known:
                continue
            if case_id not in known:
                raise DataError(path, f"line {line_number}: case {case_id!r} is not in the dataset")
            if case_id in groups and groups[case_id] != group:
                raise DataError(path, f"line {line_number}: case {case_id!r} is given two groups")
            groups[case_id] = group
    return groups


def make_splits(
    case_ids: Sequence[str], folds: int, seed: int = 0, groups: Mapping[str, str] | None = None
) -> list[dict[str, list[str]]]:
    """`folds` splits [{"train": [...], "val": [...]}]: every case validated exactly once, groups kept whole.

    The case ids are sorted and shuffled by `seed`, so the split does not depend on the listing order.
    Without groups the folds differ in size by at most one case; with groups, the groups (cases missing from
    `groups` form groups of their own) go largest first to the fold with the fewest cases so far.
    """
    cases = sorted(set(case_ids))
    groups = groups or {}
    members: dict[str, list[str]] = {}
    for case_id in cases:
        # a prefix keeps an ungrouped case from colliding with a group of the same name
        key = f"group:{groups[case_id]}" if case_id in groups else f"case:{case_id}"
        members.setdefault(key, []).append(case_id)
    if folds < 2:
        raise UsemaError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(members) < folds:
        raise UsemaError(
            f"{folds} folds need at least {folds} cases (or groups), the dataset has {len(members)}"
        )
    rng = np.random.default_rng(seed)
    keys = sorted(members)
    order = [keys[i] for i in rng.permutation(len(keys))]
    # stable sort: the shuffled order breaks ties between groups of equal size
    order.sort(key=lambda key: -len(members[key]))
    fold_cases: list[list[str]] = [[] for _ in range(folds)]
    for key in order:
        smallest = min(range(folds), key=lambda f: (len(fold_cases[f]), f))
        fold_cases[smallest].extend(members[key])
    return [
        {
            "train": sorted(c for f, others in enumerate(fold_cases) if f != k for c in others),
            "val": sorted(val),
        }
        for k, val in enumerate(fold_cases)
    ]


def load_or_create_splits(
    run_dir: str | Path,
    case_ids: Sequence[str],
    folds: int,
    seed: int = 0,
    groups_csv: str | Path | None = None,
    write: bool = True,
) -> list[dict[str, list[str]]]:
    """The splits of RUN/splits.json if it exists (it must match the cases and fold count), else new ones.

    New splits are written atomically when `write` (only the main process writes in distributed training).
    """
    path = Path(run_dir) / SPLITS_NAME
    cases = sorted(set(case_ids))
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            splits = stored["splits"]
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(path, f"unreadable splits file ({err}); delete it to make a new split") from err
        stored_cases = sorted(c for split in splits for c in split["val"])
        if len(splits) != folds:
            raise UsemaError(
                f"{path} holds {len(splits)} folds but {folds} were asked for: use the same --folds, "
                "or a new run folder"
            )
        if stored_cases != cases:
            raise UsemaError(f"{path} was made for other cases than this dataset's; use a new run folder")
        if groups_csv is not None and stored.get("groups_csv") is None:
            raise UsemaError(
                f"{path} was made without groups; delete it or use a new run folder to apply --groups"
            )
        return splits
    groups = read_groups_csv(groups_csv, cases) if groups_csv is not None else None
    splits = make_splits(cases, folds, seed, groups)
    if write:
        payload = {
            "folds": folds,
            "seed": seed,
            "groups_csv": str(groups_csv) if groups_csv is not None else None,
            "splits": splits,
        }
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(payload, indent=1) + "\n")
    return splits


def validation_subset(
    held_out: Sequence[str], limit: int | None, sizes: Mapping[str, int] | None = None,
    seed: int = VALIDATION_SEED,
) -> list[str]:
    """The held-out cases that in-training validation scores (sorted): all of them, or `limit` of them drawn
    with `seed`, stratified by size where `sizes` covers them: the cases sorted by size are cut into `limit`
    strata of (nearly) equal count and one case is drawn from each, so the subset spans small to large
    objects. Never the first cases by name, which follow acquisition order in many datasets."""
    cases = sorted(held_out)
    if limit is None or limit >= len(cases):
        return cases
    rng = np.random.default_rng(seed)
    if sizes is None or any(case not in sizes for case in cases):
        return sorted(cases[i] for i in rng.choice(len(cases), size=limit, replace=False))
    by_size = sorted(cases, key=lambda case: (sizes[case], case))
    strata = np.array_split(np.arange(len(by_size)), limit)
    return sorted(by_size[int(stratum[rng.integers(len(stratum))])] for stratum in strata)


def write_validation_subset(
    fold_dir: str | Path, cases: Sequence[str], held_out: int, stratified: bool
) -> Path:
    """Record the fold's validation cases in FOLD/validation_cases.json (atomically): the cases, how many were
    held out, whether the draw was stratified by size, and its seed. Returns the path."""
    path = Path(fold_dir) / VALIDATION_NAME
    payload = {
        "cases": list(cases),
        "held_out": held_out,
        "stratified_by_size": stratified and len(cases) < held_out,
        "seed": VALIDATION_SEED,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    return path
