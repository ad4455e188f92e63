"""Which folds predict: one, a list, or every trained fold; a fold never trained is named with its folder."""

import shutil

import pytest

from usema.checkpoint import trained_folds
from usema.errors import CheckpointError, UsemaError
from usema.inference.folds import resolve_folds


def test_all_and_no_choice_mean_every_trained_fold(two_fold_run):
    _, run = two_fold_run
    assert trained_folds(run) == [0, 1]
    assert resolve_folds(run) == resolve_folds(run, folds="all") == resolve_folds(run, folds=["all"]) == [0, 1]
    assert resolve_folds(run, fold=1) == [1]
    assert resolve_folds(run, folds=["1", "0", "1"]) == [0, 1]  # as typed on the command line


def test_a_fold_never_trained_is_refused_naming_its_folder(two_fold_run):
    _, run = two_fold_run
    with pytest.raises(CheckpointError) as error:
        resolve_folds(run, folds=[0, 3])
    assert str(error.value) == f"{run / 'fold_3'}: fold 3 was never trained (no checkpoint_best.pt); this run has folds 0, 1"


def test_a_fold_without_the_checkpoint_asked_for_names_what_it_holds(two_fold_run, tmp_path):
    run = shutil.copytree(two_fold_run[1], tmp_path / "run")
    (run / "fold_1" / "checkpoint_latest.pt").unlink()
    with pytest.raises(CheckpointError, match=r"fold_1/checkpoint_latest.pt: checkpoint not found; fold_1 holds "
                                              r"checkpoint_best.pt$"):
        resolve_folds(run, "latest", fold=1)
    assert resolve_folds(run, "latest") == [0]


def test_an_untrained_run_and_bad_fold_lists_are_refused(tmp_path, two_fold_run):
    with pytest.raises(CheckpointError, match="no fold holds checkpoint_best.pt; train a fold first"):
        resolve_folds(tmp_path)
    with pytest.raises(UsemaError, match="not both"):
        resolve_folds(two_fold_run[1], fold=0, folds=[1])
    with pytest.raises(UsemaError, match=r"fold numbers or 'all', got \['all', '1'\]"):
        resolve_folds(two_fold_run[1], folds=["all", "1"])


def test_loading_a_run_that_is_not_there_says_so(tmp_path):
    import usema

    missing = tmp_path / "no" / "such" / "run"
    with pytest.raises(UsemaError, match=rf"^{missing}: run folder not found \(a run folder holds plans.json"):
        usema.load(missing)
    afile = tmp_path / "plans.json"
    afile.write_text("{}")
    with pytest.raises(UsemaError, match=rf"^{afile}: is a file, not a run folder"):
        usema.load(str(afile))
    with pytest.raises(UsemaError, match=r"^the run folder must be a path \(a str or Path\), got None$"):
        usema.load(None)
    dataset = tmp_path / "dataset"  # a dataset given where its run was meant
    (dataset / "images").mkdir(parents=True)
    (dataset / "dataset.json").write_text("{}")
    with pytest.raises(UsemaError, match=rf"^{dataset}: not a run folder, it holds no plans.json and no fold_K/ "
                                         r"checkpoints \(plan and train one first"):
        usema.load(dataset)
