"""`usema predict`, `usema export` and `usema evaluate` as typed: options reach the API, bad input is one line."""

import numpy as np
import pytest
from PIL import Image

from usema.cli import main


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Tiny networks: one thread is faster and the numbers repeat."""


def test_predict_with_a_fold_never_trained_is_one_line_naming_the_folder(two_fold_run, tmp_path, capsys):
    data, run = two_fold_run
    image = sorted((data / "images").iterdir())[0]
    code = main(["predict", str(run), str(image), "-o", str(tmp_path / "out"), "--folds", "0", "3", "--device", "cpu"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"usema predict: error: {run / 'fold_3'}: fold 3 was never trained (no checkpoint_best.pt); "
        "this run has folds 0, 1"
    ]


def test_predict_fold_all_names_nnunets_fold_all_which_usema_runs_lack(two_fold_run, tmp_path, capsys):
    data, run = two_fold_run
    image = sorted((data / "images").iterdir())[0]
    assert main(["predict", str(run), str(image), "-o", str(tmp_path / "out"), "--fold", "all"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"usema predict: error: {run}: fold 'all' is nnU-Net's fold_all (trained on every case), which usema runs "
        "do not have; --folds all ensembles every trained fold"
    ]
    assert not (tmp_path / "out").exists()


def test_predict_options_reach_the_predictor(two_fold_run, tmp_path, capsys):
    import usema

    data, run = two_fold_run
    image = sorted((data / "images").iterdir())[0]
    out = tmp_path / "out"
    assert main(["predict", str(run), str(image), "-o", str(out), "--fold", "1", "--disable-tta",
                 "--step-size", "0.75", "--save-probabilities", "--device", "cpu"]) == 0
    expected = usema.load(run, fold=1, tta=False, step_size=0.75, device="cpu").predict(image)
    np.testing.assert_array_equal(np.asarray(Image.open(out / image.name)), expected)
    assert (out / image.name.replace(".png", ".npz")).is_file()
    # --tta is deprecated: accepted from older scripts with a warning, and changes nothing (mirroring is on)
    capsys.readouterr()
    assert main(["predict", str(run), str(image), "-o", str(tmp_path / "a"), "--tta", "--device", "cpu"]) == 0
    assert "usema: warning: --tta is deprecated and does nothing" in capsys.readouterr().err
    assert main(["predict", str(run), str(image), "-o", str(tmp_path / "b"), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / image.name)),
                                  np.asarray(Image.open(tmp_path / "b" / image.name)))


def test_predict_resume_continues_with_the_same_options_and_names_the_record_otherwise(two_fold_run, tmp_path,
                                                                                        capsys):
    data, run = two_fold_run
    images = sorted((data / "images").iterdir())[:2]
    out = tmp_path / "out"
    assert main(["predict", str(run), str(images[0]), "-o", str(out), "--fold", "0", "--device", "cpu"]) == 0
    first = np.asarray(Image.open(out / images[0].name))
    capsys.readouterr()
    both = [str(image) for image in images]
    assert main(["predict", str(run), *both, "-o", str(out), "--fold", "0", "--device", "cpu", "--resume"]) == 0
    assert "resume: 1 of 2 cases already predicted" in capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(Image.open(out / images[0].name)), first)
    assert (out / images[1].name).is_file()

    assert main(["predict", str(run), *both, "-o", str(out), "--fold", "1", "--device", "cpu", "--resume"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"usema predict: error: {out / 'usema_predict.json'}: the predictions there were made "
                           "with other settings: checkpoints ['fold_0/checkpoint_best.pt'] -> "
                           "['fold_1/checkpoint_best.pt']")
    with pytest.raises(SystemExit):
        main(["predict", str(run), *both, "-o", str(out), "--resume", "--overwrite"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_predict_refuses_tta_with_disable_tta_and_a_bad_step_size(two_fold_run, tmp_path, capsys):
    data, run = two_fold_run
    image = str(sorted((data / "images").iterdir())[0])
    with pytest.raises(SystemExit):
        main(["predict", str(run), image, "-o", str(tmp_path / "o"), "--tta", "--disable-tta"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["predict", str(run), image, "-o", str(tmp_path / "o"), "--step-size", "0", "--device", "cpu"]) == 2
    assert "step size 0.0 is outside (0, 1]" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
@pytest.mark.slow
def test_export_onnx_matches_the_fold_network_in_onnxruntime(two_fold_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import torch

    import usema

    _, run = two_fold_run
    assert main(["export", str(run), "-o", str(tmp_path / "model.onnx"), "--fold", "1"]) == 0
    assert ("input 'image' of shape ['batch', 1, 'height', 'width'] (any batch and any spatial size"
            in capsys.readouterr().out)

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    network = usema.load(run, fold=1, device="cpu", precision="fp32").model
    # the sliding window feeds several patches of the plan's size at once; a whole image may be larger
    for batch, size in ((1, (16, 16)), (2, (16, 16)), (1, (32, 48)), (2, (24, 20))):
        image = np.random.default_rng(batch).normal(size=(batch, 1, *size)).astype(np.float32)
        (logits,) = session.run(["logits"], {"image": image})
        with torch.no_grad():
            expected = network(torch.from_numpy(image)).numpy()
        assert logits.shape == (batch, 3, *size)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_export_keeps_existing_files_and_the_fold_folders(two_fold_run, tmp_path, capsys):
    _, run = two_fold_run
    checkpoint = run / "fold_0" / "checkpoint_best.pt"
    before = checkpoint.read_bytes()
    assert main(["export", str(run), "-o", str(checkpoint), "--overwrite"]) == 2
    assert f"{checkpoint}: lies in the run's fold folder {run / 'fold_0'}" in capsys.readouterr().err
    assert main(["export", str(run), "-o", str(run / "fold_1" / "model.pt")]) == 2
    assert not (run / "fold_1" / "model.pt").exists() and checkpoint.read_bytes() == before

    existing = tmp_path / "model.pt"
    existing.write_bytes(b"someone's model")
    assert main(["export", str(run), "-o", str(existing)]) == 2
    assert f"{existing}: exists already; give --overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"someone's model"
    assert main(["export", str(run), "-o", str(existing), "--overwrite"]) == 0
    assert existing.read_bytes() != b"someone's model"


def test_export_refuses_other_formats_and_untrained_folds(two_fold_run, tmp_path, capsys):
    _, run = two_fold_run
    assert main(["export", str(run), "-o", str(tmp_path / "model.h5")]) == 2
    assert "model.h5: export writes .onnx (ONNX) or .pt (TorchScript) files, not '.h5'" in capsys.readouterr().err
    assert main(["export", str(run), "-o", str(tmp_path / "model.pt"), "--fold", "2"]) == 2
    assert f"{run / 'fold_2'}: fold 2 was never trained" in capsys.readouterr().err
    assert not (tmp_path / "model.pt").exists()


def test_ctrl_c_during_predict_is_one_line_and_the_sigint_code(two_fold_run, tmp_path, capsys, monkeypatch):
    from usema.inference import predict_files

    data, run = two_fold_run
    image = sorted((data / "images").iterdir())[0]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_files, "predict", interrupted)
    assert main(["predict", str(run), str(image), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 130
    err = capsys.readouterr().err
    assert err == "usema predict: interrupted; the files written so far are complete (--resume continues)\n"
