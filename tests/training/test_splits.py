"""k-fold splits: deterministic by seed, disjoint, covering, groups kept whole, stored and reused; the validation
subset drawn from a held-out fold."""

import json

import pytest

from usema.errors import DataError, UsemaError
from usema.training.splits import load_or_create_splits, make_splits, read_groups_csv, validation_subset

CASES = [f"case_{i:02d}" for i in range(23)]


def _check_partition(splits, cases):
    vals = [set(s["val"]) for s in splits]
    assert set().union(*vals) == set(cases)
    assert sum(len(v) for v in vals) == len(cases)  # disjoint
    for split in splits:
        assert set(split["train"]) == set(cases) - set(split["val"])


def test_split_is_deterministic_disjoint_and_balanced():
    splits = make_splits(CASES, folds=5, seed=7)
    _check_partition(splits, CASES)
    assert sorted(len(s["val"]) for s in splits) == [4, 4, 5, 5, 5]
    # the listing order does not matter, the seed does
    assert make_splits(list(reversed(CASES)), folds=5, seed=7) == splits
    assert make_splits(CASES, folds=5, seed=8) != splits


def test_groups_stay_in_one_fold(tmp_path):
    groups_csv = tmp_path / "groups.csv"
    rows = ["case_id,group"] + [f"{case},patient_{i // 3}" for i, case in enumerate(CASES[:18])]
    groups_csv.write_text("\n".join(rows) + "\n")
    groups = read_groups_csv(groups_csv, CASES)
    assert groups["case_00"] == groups["case_02"] == "patient_0" and "case_20" not in groups
    splits = make_splits(CASES, folds=4, seed=0, groups=groups)
    _check_partition(splits, CASES)
    for patient in set(groups.values()):
        members = {c for c, g in groups.items() if g == patient}
        assert sum(bool(members & set(s["val"])) for s in splits) == 1, patient
    sizes = sorted(len(s["val"]) for s in splits)
    assert sizes[-1] - sizes[0] <= 3  # largest groups first, into the emptiest fold


def test_bad_groups_files_name_the_file_and_the_problem(tmp_path):
    path = tmp_path / "groups.csv"
    path.write_text("case_00,a\nnot_a_case,b\n")
    with pytest.raises(DataError, match="not_a_case") as err:
        read_groups_csv(path, CASES)
    assert err.value.path == path
    path.write_text("case_00,a,extra\n")
    with pytest.raises(DataError, match="2 columns"):
        read_groups_csv(path, CASES)
    path.write_text("case_00,a\ncase_00,b\n")
    with pytest.raises(DataError, match="two groups"):
        read_groups_csv(path, CASES)
    with pytest.raises(DataError, match="not found"):
        read_groups_csv(tmp_path / "missing.csv", CASES)


def test_too_few_cases_or_folds_are_refused():
    with pytest.raises(UsemaError, match="at least 2 folds"):
        make_splits(CASES, folds=1)
    with pytest.raises(UsemaError, match="need at least 5"):
        make_splits(CASES[:4], folds=5)


def test_split_file_is_written_once_and_reused(tmp_path):
    first = load_or_create_splits(tmp_path, CASES, folds=3, seed=1)
    stored = json.loads((tmp_path / "splits.json").read_text())
    assert stored["splits"] == first and stored["folds"] == 3 and stored["seed"] == 1
    # another seed later (e.g. a second training seed) keeps the stored split
    assert load_or_create_splits(tmp_path, CASES, folds=3, seed=2) == first
    with pytest.raises(UsemaError, match="3 folds but 5"):
        load_or_create_splits(tmp_path, CASES, folds=5)
    with pytest.raises(UsemaError, match="other cases"):
        load_or_create_splits(tmp_path, CASES[:-1], folds=3)
    (tmp_path / "splits.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable splits"):
        load_or_create_splits(tmp_path, CASES, folds=3)


def test_split_is_not_written_when_asked_not_to(tmp_path):
    splits = load_or_create_splits(tmp_path, CASES, folds=3, seed=1, write=False)
    assert not (tmp_path / "splits.json").exists()
    assert splits == make_splits(CASES, 3, 1)


def test_the_validation_subset_spans_the_sizes_and_is_not_the_first_cases_by_name():
    held_out = [f"case_{i:02d}" for i in range(20)]
    # names follow acquisition order, and the objects grow with it (the first cases are the hardest)
    sizes = {case: 100 * (i + 1) for i, case in enumerate(held_out)}
    subset = validation_subset(held_out, 4, sizes)
    assert len(subset) == 4 and subset != held_out[:4] and subset == sorted(subset)
    # one case from each quarter of the sizes
    assert [held_out.index(case) // 5 for case in subset] == [0, 1, 2, 3]
    assert validation_subset(list(reversed(held_out)), 4, sizes) == subset  # a function of the cases, not order
    assert validation_subset(held_out, 4, sizes, seed=1) != subset  # drawn, with the fixed seed by default
    # without sizes a seeded draw; a limit of the fold's size or none: every case
    unsized = validation_subset(held_out, 4)
    assert len(set(unsized)) == 4 and unsized == validation_subset(held_out, 4) and unsized != held_out[:4]
    assert validation_subset(held_out, None, sizes) == validation_subset(held_out, 20, sizes) == held_out
