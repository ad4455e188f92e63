"""TrainingSettings: the planner's choice, the defaults of keys a plan lacks, and a caller's choices."""

import pytest

from usema.errors import UsemaError
from usema.planning.settings import DEFAULT_LR, TrainingSettings, planned_loader_workers


def test_planned_training_settings_follow_device_budget_and_cpus():
    assert TrainingSettings.planned("cpu").optimizer == "adamw"
    assert TrainingSettings.planned("cuda", 60).optimizer == "adamw"
    sgd = TrainingSettings.planned("cuda", None)
    assert (sgd.optimizer, sgd.lr, sgd.epochs, sgd.iters_per_epoch, sgd.num_workers) == (
        "sgd",
        0.01,
        1000,
        250,
        None,
    )
    assert TrainingSettings.planned("cuda", 180).optimizer == "sgd"


def test_loader_workers_belong_to_the_training_machine_and_its_processes_not_to_the_plan(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert [planned_loader_workers(n) for n in (1, 2, 6, 64)] == [0, 1, 3, 8]
    # eight processes of a 16-CPU node share its half: one worker each, not eight
    assert planned_loader_workers(16, processes=8) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # as torchrun sets it
    assert planned_loader_workers(16) == 2
    section = TrainingSettings.planned("cpu").to_dict()
    assert "num_workers" not in section  # plans.json does not store the planning machine's count
    assert TrainingSettings.from_dict(section).num_workers is None
    assert TrainingSettings.planned("cpu").with_choices(num_workers=3).to_dict()["num_workers"] == 3


def test_absent_keys_take_the_defaults_and_keys_of_no_setting_are_left_alone():
    settings = TrainingSettings.from_dict(
        {"optimizer": "sgd", "lr": 1, "epochs": 2, "iters_per_epoch": 3, "val_max_cases": 0, "my_note": "x"}
    )
    assert (settings.lr, settings.weight_decay, settings.num_workers, settings.val_max_cases) == (
        1.0,
        3e-5,
        None,  # the machine that trains decides
        None,
    )
    assert "my_note" not in settings.to_dict() and settings.to_dict()["schedule"] == "poly"


def test_choices_keep_what_they_do_not_name():
    settings = TrainingSettings.planned("cpu")
    assert settings.with_choices() == settings and settings.with_choices(precision="auto") == settings
    chosen = settings.with_choices(optimizer="sgd", num_workers=0, schedule="cosine", iters_per_epoch=9)
    assert (chosen.optimizer, chosen.lr, chosen.num_workers, chosen.schedule) == (
        "sgd",
        DEFAULT_LR["sgd"],
        0,
        "cosine",
    )
    assert chosen.epochs == settings.epochs and chosen.iters_per_epoch == 9
    assert settings.with_choices(optimizer="adamw").lr == settings.lr  # the same optimiser keeps its rate
    for choice in ({"num_workers": -1}, {"iters_per_epoch": 0}, {"optimizer": "lamb"}):
        with pytest.raises(UsemaError):
            settings.with_choices(**choice)
