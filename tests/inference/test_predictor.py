"""Predictor: sliding-window probabilities, mirroring TTA, and loading a checkpoint's weights safely."""

import numpy as np
import pytest
import torch
from torch import nn

from usema.checkpoint import write_checkpoint_file
from usema.data.io import ImageGeometry
from usema.errors import CheckpointError, UsemaError
from usema.inference.predictor import Predictor, load_predictor, with_results_on_cpu_if_out_of_memory
from usema.models import registry
from usema.planning import Plans
from usema.utils.device import resolve_precision


def plans_for(spatial_dims, patch_size, num_classes=2, batch_size=1, label_mode="semantic", precision="auto"):
    return {
        "version": 1,
        "dataset": {
            "path": "/nonexistent",
            "format": "msd",
            "spatial_dims": spatial_dims,
            "num_channels": 1,
            "labels": {str(k): str(k) for k in range(num_classes)},
            "label_mode": label_mode,
            "num_classes": num_classes,
            "cases": ["a"],
        },
        "target_spacing": [1.0] * spatial_dims,
        "normalization": {"scheme": "none"},
        "patch_size": list(patch_size),
        "batch_size": batch_size,
        "model": {"name": "toy", "overrides": {}},
        "training": {
            "optimizer": "sgd",
            "lr": 0.01,
            "epochs": 1,
            "iters_per_epoch": 1,
            "precision": precision,
        },
    }


class Ramp(nn.Module):
    """Counts its calls; logits of class 1 rise along the last axis, so its output is not mirror-symmetric."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        ramp = torch.linspace(-3, 3, x.shape[-1]).expand(x.shape[:1] + (1,) + x.shape[2:])
        return torch.cat([torch.zeros_like(ramp), ramp + x[:, :1]], dim=1)


def make_predictor(model, plans, tta=False, step_size=0.5):
    models = model if isinstance(model, list) else [model]
    return Predictor(
        models=[m.eval() for m in models], plans=Plans(plans), device=torch.device("cpu"),
        autocast_dtype=None, checkpoints=[], tta=tta, step_size=step_size,
    )


def test_probabilities_cover_an_image_larger_than_the_patch():
    predictor = make_predictor(Ramp(), plans_for(2, [8, 8], batch_size=3))
    image = np.random.default_rng(0).normal(size=(1, 19, 13)).astype(np.float32)

    probabilities = predictor.probabilities(image)

    assert probabilities.shape == (2, 19, 13) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    # Where the image is strongly positive, class 1 must win whatever the ramp says.
    assert np.all(probabilities[1][image[0] > 4] > 0.5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_tta_runs_every_mirroring_and_averages_them(spatial_dims):
    shape = (6,) * spatial_dims
    model = Ramp()
    predictor = make_predictor(model, plans_for(spatial_dims, shape))  # one window: one call per mirroring
    constant = np.zeros((1, *shape), dtype=np.float32)

    plain = predictor.probabilities(constant)
    calls_plain = model.calls
    predictor.tta = True
    averaged = predictor.probabilities(constant)

    assert calls_plain == 1 and model.calls - calls_plain == 2**spatial_dims
    assert averaged.shape == plain.shape
    assert not np.allclose(plain, np.flip(plain, axis=-1))  # the model alone prefers one side...
    for axis in range(1, spatial_dims + 1):  # ...the average over mirrorings of a constant image cannot
        np.testing.assert_allclose(averaged, np.flip(averaged, axis=axis), atol=1e-6)
    np.testing.assert_allclose(averaged, 0.5 * (plain + np.flip(plain, axis=-1)), atol=1e-6)


def test_segment_restores_the_input_grid_and_rebuilds_instances():
    plans = plans_for(2, [8, 8], num_classes=3, label_mode="instance")
    plans["target_spacing"] = [0.5, 0.5]  # the network works on a grid twice as fine

    class Bright(nn.Module):
        def forward(self, x):
            return torch.cat([-x, x, torch.full_like(x, -50.0)], dim=1)

    predictor = make_predictor(Bright(), plans)
    image = np.full((1, 10, 12), -1.0, dtype=np.float32)
    image[0, 1:4, 1:5] = 1.0
    image[0, 6:9, 7:11] = 1.0
    geometry = ImageGeometry((10, 12), (1.0, 1.0), None, "png")

    instances = predictor.segment(image, geometry)

    assert instances.shape == (10, 12)
    assert sorted(np.unique(instances).tolist()) == [0, 1, 2]
    assert len(np.unique(instances[1:4, 1:5])) == 1 and instances[2, 2] != instances[7, 8]
    np.testing.assert_array_equal(instances > 0, image[0] > 0)


class Heads(nn.Module):
    """A toy network whose deep-supervision variant has an extra, lower-resolution head."""

    def __init__(self, deep_supervision=False):
        super().__init__()
        self.body = nn.Conv2d(1, 2, 1)
        if deep_supervision:
            self.aux = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.body(x)


@pytest.fixture
def toy_models(monkeypatch):
    built = []

    def build(name, spatial_dims, in_channels, num_classes, deep_supervision=False, **overrides):
        built.append(deep_supervision)
        return Heads(deep_supervision)

    monkeypatch.setattr(registry, "build_model", build)
    return built


def save_run(run_dir, state, plans, deep_supervision, with_plans=True):
    entry = {
        "name": "toy",
        "spatial_dims": 2,
        "in_channels": 1,
        "num_classes": 2,
        "overrides": {},
        "deep_supervision": deep_supervision,
    }
    payload = {"model_state": state, "model": entry, "epoch": 3}
    if with_plans:
        payload["plans"] = plans
    write_checkpoint_file(payload, run_dir / "fold_1" / "checkpoint_best.pt")  # as usema wrote it before plans v2


def test_deep_supervision_heads_are_dropped_and_the_rest_loaded(tmp_path, toy_models):
    torch.manual_seed(0)
    trained = Heads(deep_supervision=True)
    save_run(tmp_path, trained.state_dict(), plans_for(2, [8, 8]), deep_supervision=True)

    predictor = load_predictor(tmp_path, fold=1, device="cpu")

    assert toy_models[0] is False  # the network used for inference is built without deep supervision
    assert not predictor.model.training and not hasattr(predictor.model, "aux")
    torch.testing.assert_close(predictor.model.body.weight, trained.body.weight)
    assert predictor.plans.patch_size == [8, 8]
    assert predictor.autocast_dtype is resolve_precision("auto", torch.device("cpu"))  # the plan's "auto"


def test_weights_of_unknown_layers_are_refused(tmp_path, toy_models):
    state = Heads().state_dict()
    state["stray.weight"] = torch.zeros(2)
    save_run(tmp_path, state, plans_for(2, [8, 8]), deep_supervision=True)

    with pytest.raises(CheckpointError, match="stray.weight"):
        load_predictor(tmp_path, fold=1, device="cpu")


def test_missing_checkpoint_and_mismatched_plans_are_refused(tmp_path, toy_models):
    with pytest.raises(UsemaError, match="not a run folder, it holds no plans.json and no fold_K/ checkpoints"):
        load_predictor(tmp_path, fold=1, device="cpu")
    save_run(tmp_path, Heads().state_dict(), None, deep_supervision=False, with_plans=False)
    with pytest.raises(CheckpointError, match="checkpoint_latest.pt: checkpoint not found; fold_1 holds checkpoint_best.pt"):
        load_predictor(tmp_path, checkpoint="latest", fold=1, device="cpu")

    Plans(plans_for(2, [8, 8], num_classes=4)).save(tmp_path)  # RUN/plans.json of another label set
    with pytest.raises(CheckpointError, match="num_classes"):
        load_predictor(tmp_path, fold=1, device="cpu")


def test_fp16_training_precision_falls_back_on_cpu(tmp_path, toy_models):
    save_run(tmp_path, Heads().state_dict(), plans_for(2, [8, 8], precision="fp16"), deep_supervision=False)
    cpu_default = resolve_precision("auto", torch.device("cpu"))  # bf16 on CPUs with native bf16, else fp32
    assert cpu_default in (None, torch.bfloat16)
    assert load_predictor(tmp_path, fold=1, device="cpu").autocast_dtype is cpu_default


def test_a_checkpoint_of_another_model_than_the_runs_plan_is_refused(tmp_path, toy_models):
    save_run(tmp_path, Heads().state_dict(), plans_for(2, [8, 8]), deep_supervision=False)
    plans = plans_for(2, [8, 8])
    plans["model"]["name"] = "usema"  # the run was planned (and retrained) for another model
    Plans(plans).save(tmp_path)
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint is for another model: name='toy', expected 'usema' by .*plans\.json",
    ):
        load_predictor(tmp_path, fold=1, device="cpu")
    plans["model"] = {"name": "toy", "overrides": {"width": 16}}  # same model, other network settings
    Plans(plans).save(tmp_path)
    with pytest.raises(CheckpointError, match=r"network_settings=\{\}, expected \{'width': 16\}"):
        load_predictor(tmp_path, fold=1, device="cpu")
    plans["model"]["overrides"] = {}
    Plans(plans).save(tmp_path)
    assert load_predictor(tmp_path, fold=1, device="cpu").plans.model_name == "toy"


class Constant(nn.Module):
    """The same logits everywhere, whatever the image."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)

    def forward(self, x):
        # a tensor of its own (MONAI weights the window's output in place: an expanded view cannot be)
        return self.logits.view(1, -1, *[1] * (x.ndim - 2)).expand(x.shape[0], -1, *x.shape[2:]).clone()


def test_an_ensemble_averages_the_softmax_of_its_folds():
    first, second = Constant([2.0, 0.0]), Constant([0.0, 3.0])
    predictor = make_predictor([first, second], plans_for(2, [4, 4]))

    probabilities = predictor.probabilities(np.zeros((1, 6, 5), dtype=np.float32))

    expected = (torch.softmax(first.logits, 0) + torch.softmax(second.logits, 0)).numpy() / 2
    np.testing.assert_allclose(probabilities[:, 3, 2], expected, rtol=1e-6)  # 0.5 * (0.881 + 0.047) for class 0
    assert probabilities.shape == (2, 6, 5)


@pytest.mark.parametrize(("step_size", "windows"), [(1.0, 4), (0.5, 9), (0.25, 25)])
def test_the_step_size_sets_how_far_apart_the_windows_are(step_size, windows):
    model = Ramp()
    predictor = make_predictor(model, plans_for(2, [8, 8]), step_size=step_size)  # one window per call

    predictor.probabilities(np.zeros((1, 16, 16), dtype=np.float32))

    assert model.calls == windows  # 16 = 8 + k * 8 * step_size: 2, 3 and 5 windows along each axis


@pytest.mark.parametrize("step_size", [0.0, 1.5, -0.5])
def test_a_step_size_outside_zero_to_one_is_refused(step_size):
    with pytest.raises(UsemaError, match=f"step size {step_size} is outside"):
        make_predictor(Ramp(), plans_for(2, [8, 8]), step_size=step_size)


def test_predict_takes_an_array_at_the_plan_spacing_or_its_own():
    plans = plans_for(2, [8, 8])
    plans["target_spacing"] = [0.5, 0.5]

    class Bright(nn.Module):
        def forward(self, x):
            return torch.cat([-x, x], dim=1)

    predictor = make_predictor(Bright(), plans)
    image = np.full((10, 12), -1.0, dtype=np.float32)
    image[2:6, 3:9] = 1.0

    at_plan_spacing = predictor.predict(image)  # (*S): one channel
    coarser = predictor.predict(image[None], spacing=[1.0, 1.0])  # resampled to 0.5 and back

    np.testing.assert_array_equal(at_plan_spacing, image > 0)
    np.testing.assert_array_equal(coarser, image > 0)
    np.testing.assert_array_equal(predictor.predict(torch.from_numpy(image)), image > 0)  # a tensor too
    assert repr(predictor) == (f"Predictor({predictor.plans.model_name}, 2D, folds [], device cpu, tta False, "
                               "step_size 0.5)")  # not the dataclass's, which prints every network: Bright()
    with pytest.raises(UsemaError, match=r"shape \(2, 1, 10, 12\) for a 2D model"):
        predictor.predict(image[None, None].repeat(2, axis=0))
    with pytest.raises(UsemaError, match=r"spacing \[1.0\] has 1 values"):
        predictor.predict(image, spacing=[1.0])
    for spacing in ([0.0, 1.0], [-1.0, 1.0], [float("nan"), 1.0], [float("inf"), 1.0]):
        with pytest.raises(UsemaError, match="every voxel size must be a positive, finite number"):
            predictor.predict(image, spacing=spacing)
    # a photograph as PIL and numpy hand it over, (H, W, 3), to a model of 1 channel: channels last, said so
    with pytest.raises(UsemaError, match=r"shape \(10, 12, 3\) has its channels last; the model takes \(channels, "
                                         r"\*spatial\) with 1: pass np.moveaxis\(array, -1, 0\)"):
        predictor.predict(np.zeros((10, 12, 3), dtype=np.float32))


def test_results_that_do_not_fit_the_device_are_kept_on_the_cpu(capsys):
    # a GPU that holds every window but not the whole image's results: the first run fails, the second keeps
    # the image and the results on the CPU and sends only the windows to the device
    predictor = make_predictor(Ramp(), plans_for(2, [8, 8], batch_size=3), tta=True)
    image = np.random.default_rng(0).normal(size=(1, 19, 13)).astype(np.float32)
    expected = predictor.probabilities(image)
    tried = []

    def sliding_window(results_device):
        tried.append(results_device.type)
        if results_device.type != "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.1 GiB")
        return predictor._probabilities(image, results_device)

    result = with_results_on_cpu_if_out_of_memory(sliding_window, torch.device("cuda"))

    assert tried == ["cuda", "cpu"]
    np.testing.assert_array_equal(result, expected)
    assert "do not fit in cuda memory: they are kept on the CPU" in capsys.readouterr().err

    def out_of_memory(results_device):
        raise torch.cuda.OutOfMemoryError("out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):  # on the CPU there is nowhere else to go
        with_results_on_cpu_if_out_of_memory(out_of_memory, torch.device("cpu"))
