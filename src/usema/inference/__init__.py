"""usema.inference: segment new images with a trained run (`predict_files.predict`, public as
`usema.predict`), and export networks (`export`).

Modules: `inputs` (files and folders -> cases, checks of the inputs and the output folder), `predictor`
(checkpoint -> eval-mode network, sliding window + mirroring TTA), `overlay` (quick-look PNGs), `predict_files`
(the `usema predict` command over files and folders), `prediction_record` (what made an output folder's
predictions, for `--resume`), `export` (TorchScript and ONNX).

`collect_cases(inputs, plans)`: the images of files and folders grouped into cases as `usema predict` groups
them (one file per channel where the run takes several).
"""

from usema.inference.inputs import InferenceCase, collect_cases

__all__ = ["InferenceCase", "collect_cases"]
