"""`usema plan` and `usema train` as typed: the device a plan is for, its time estimate, and the training
options (--plan, --num-workers, --max-minutes, --pretrained-weights)."""

import re

import pytest
import torch

from usema.checkpoint import Checkpoint
from usema.cli import main
from usema.data.phantoms import make_phantom_dataset
from usema.planning import Plans

TINY = 'network_settings={"base_features": 4, "blocks_per_stage": 1, "head_dim": 4}'


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny networks: one thread is faster and the numbers repeat."""


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("cli") / "data", spatial_dims=2, num_cases=5,
                                shape=(40, 36), seed=0)


def _train(data, run, *extra):
    return main(["train", str(data), "-o", str(run), "--folds", "2", "--device", "cpu", "--epochs", "1",
                 "--iters-per-epoch", "2", *extra])


def test_plan_on_a_cpu_says_what_it_chose_why_and_how_long_training_takes(phantoms, tmp_path, capsys):
    assert main(["plan", str(phantoms), "-o", str(tmp_path / "run"), "--device", "cpu",
                 "--plan", "val_max_cases=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    plans = Plans.load(tmp_path / "run")
    assert out[0] == f"wrote {tmp_path / 'run' / 'plans.json'}"
    patch = "x".join(map(str, plans.patch_size))
    assert out[1].startswith("planned for cpu: usema with base_features 16, max_features 128, blocks_per_stage 1, "
                             f"head_dim 16, sema_per_stage deepest-2; patch {patch}, "
                             f"batch {plans.batch_size}, adamw lr 0.003, 30 minutes of training (at most 1000 "
                             "epochs of 100 steps)")
    assert out[2].startswith("why: on a CPU the preset's full widths")
    assert out[3].startswith("training: 30 minutes on this CPU hold about ") and "steps timed" in out[3]


@pytest.mark.skipif(torch.cuda.is_available(), reason="plans for a GPU that is not here")
def test_plan_for_a_gpu_on_a_machine_without_one_is_made_and_not_timed(phantoms, tmp_path, capsys):
    assert main(["plan", str(phantoms), "-o", str(tmp_path / "run"), "--device", "cuda", "--plan", TINY]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("planned for cuda: usema with base_features 4, blocks_per_stage 1, head_dim 4, "
                             "sema_per_stage deepest-2; ")
    assert "sgd lr 0.01" in out[1]
    assert out[-1] == "training: not timed, no GPU on this machine (train prints each epoch's time)"

    assert _train(phantoms, tmp_path / "run") == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("usema: warning")]
    plans = Plans.load(tmp_path / "run")
    assert warning == [
        f"usema: warning: {tmp_path / 'run' / 'plans.json'} was planned for cuda and this run trains on cpu; chosen "
        "for cuda: a network without the compact CPU settings (a cpu plan takes the compact network); sgd lr 0.01 (a cpu plan: adamw "
        "lr 0.003); 250000 steps (a cpu plan: 30 minutes); patch "
        f"{'x'.join(map(str, plans.patch_size))} and batch {plans.batch_size} sized for a 5 GiB budget. "
        "`usema plan DATA -o NEW_RUN --device cpu` plans for this device"
    ]


@pytest.mark.slow
def test_train_plan_edits_shape_a_new_plan_and_only_training_keys_change_an_existing_one(phantoms, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(phantoms, run, "--plan", TINY, "patch_size=[32,32]", "lr=0.001", "--num-workers", "1") == 0
    plans = Plans.load(run)
    assert plans.patch_size == [32, 32] and plans.network_settings["base_features"] == 4
    trained = Checkpoint.load(run / "fold_0" / "checkpoint_latest.pt").plans.training
    assert trained.lr == 0.001 and trained.num_workers == 1

    # the same edits again, with a training key changed: continues the same plan
    assert _train(phantoms, run, "--plan", TINY, "patch_size=[32,32]", "lr=0.002", "--fold", "1") == 0
    assert Checkpoint.load(run / "fold_1" / "checkpoint_latest.pt").plans.training.lr == 0.002
    capsys.readouterr()
    assert _train(phantoms, run, "--plan", "patch_size=[16,16]", "--fold", "1", "--overwrite") == 2
    assert capsys.readouterr().err.strip() == (
        f"usema train: error: {run / 'plans.json'} was planned with patch_size=[32, 32]; --plan patch_size=[16, 16] "
        f"makes another plan: use a new run folder, or plan this one again (usema plan DATA -o {run} --plan ...)"
    )


@pytest.mark.slow
def test_train_stops_at_max_minutes_and_starts_from_pretrained_weights(phantoms, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert _train(phantoms, first, "--plan", TINY, "patch_size=[32,32]") == 0
    source = first / "fold_0" / "checkpoint_latest.pt"
    assert main(["train", str(phantoms), "-o", str(second), "--folds", "2", "--device", "cpu", "--epochs", "3",
                 "--iters-per-epoch", "50", "--max-minutes", "1e-9", "--plan", TINY, "patch_size=[32,32]",
                 "--pretrained-weights", str(source)]) == 0
    err = capsys.readouterr().err
    rows = (second / "fold_0" / "train_log.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header and the one epoch the budget cut short
    assert f"pretrained weights {source}: loaded " in err and "skipped 0 (0 of another shape" in err
    assert main(["train", str(phantoms), "-o", str(tmp_path / "third"), "--device", "cpu",
                 "--pretrained-weights", str(tmp_path / "nothing.pt")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"usema train: error: {tmp_path / 'nothing.pt'}: pretrained weights not found")


def test_train_with_epochs_describes_the_training_it_runs_and_the_batch_the_plan_chose(phantoms, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(phantoms, run, "--plan", TINY, "batch_size=3") == 0
    err = capsys.readouterr().err.splitlines()
    plans = Plans.load(run)
    patch = "x".join(map(str, plans.patch_size))
    planned = next(line for line in err if line.startswith("planned for cpu: "))
    # the epochs it trains, within the CPU plan's stored 30-minute budget
    assert planned.endswith(f"patch {patch}, batch 3, adamw lr 0.003, 30 minutes of training (at most 1 epoch of "
                            "2 steps)")
    why = next(line for line in err if line.startswith("why: "))
    assert f"(here a batch of 3 patches of {patch})" in why
    assert "training: not timed, its epochs were given (train prints each epoch's time)" in err
    assert (f"{run / 'plans.json'} keeps the planner's 30 minutes of training (at most 1000 epochs of 100 steps); "
            "--epochs and --iters-per-epoch apply to this run") in err
    assert not any("no CPU on this machine" in line for line in err)
    logged = float((run / "fold_0" / "train_log.csv").read_text().splitlines()[1].split(",")[2])  # val_dice
    ended = re.fullmatch(r"fold 0: trained 1 epoch, to epoch 1 of 1; best validation Dice (\d\.\d{4}) at epoch 1: "
                         + re.escape(str(run / "fold_0" / "checkpoint_best.pt")), err[-1])
    assert ended and abs(float(ended[1]) - logged) <= 1e-4
    assert _train(phantoms, run, "--resume") == 0  # a finished fold: says so
    assert capsys.readouterr().err.splitlines()[-1].startswith("fold 0: already trained to epoch 1 of 1, nothing to do")
    assert "num_workers" not in Plans.load(run).to_dict()["training"]  # the training machine's, not the plan's
