"""usema.inference: segment new images with a trained run (`api.predict`), and export networks (`export`).

Modules: `inputs` (files and folders -> cases, output checks), `predictor` (checkpoint -> eval-mode network,
sliding window + mirroring TTA), `overlay` (quick-look PNGs), `api` (the `usema predict` command), `export`
(TorchScript and ONNX).
"""
