"""usema.inference: segment new images with a trained run (`predict_files.predict`, public as
`usema.predict`), and export networks (`export`).

Modules: `inputs` (files and folders -> cases, output checks), `predictor` (checkpoint -> eval-mode network,
sliding window + mirroring TTA), `overlay` (quick-look PNGs), `predict_files` (the `usema predict` command
over files and folders), `export` (TorchScript and ONNX).
"""
