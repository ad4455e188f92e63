"""Preprocess every case of a plan into RUN/preprocessed (the format: usema.preprocessing.storage), once:
cases stored with the same plan settings are skipped, so an interrupted run resumes, and a user's edit of
those settings makes them stale."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from usema.data.datasets import DatasetSpec, load_case
from usema.errors import DataError
from usema.planning.plans import Plans
from usema.preprocessing.image import preprocess_image, preprocess_label
from usema.preprocessing.storage import case_files, stored_key, write_case

PREPROCESSED_DIR = "preprocessed"
# Bump when the preprocessing or its storage changes, so that cases written by an older version are redone.
# 2: memory-mappable .npy files instead of one .npz per case.
PREPROCESS_VERSION = 2


def preprocessing_key(plans: Plans) -> str:
    """A short hash of the plan settings that shape a preprocessed case: a user's edit makes cases stale."""
    info = plans.dataset
    relevant = {
        "version": PREPROCESS_VERSION,
        "path": info.path,
        "label_mode": info.label_mode,
        "num_channels": info.num_channels,
        "num_classes": info.num_classes,
        "target_spacing": plans.target_spacing,
        "normalization": plans.normalization.to_dict(),
    }
    values = info.label_values
    if info.label_mode == "semantic" and values != list(range(info.num_classes)):
        relevant["label_values"] = values  # they decide the classes (keys of plans with 0..K-1 stay as they were)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _refuse_foreign_files(spec: DatasetSpec, folder: Path, case_id: str, stored: str | None) -> None:
    """DataError when a file of the case would overwrite a file inside the dataset folder that is not ours."""
    if stored:
        return
    for path in case_files(folder, case_id).values():
        if path.exists() and spec.holds(path):
            raise DataError(
                path,
                "exists in the dataset folder and is not a usema preprocessed case; refusing to overwrite it",
            )


def _remove_older_format(folder: Path, case_id: str) -> None:
    """Delete the .npz that preprocessing version 1 wrote for the case, where it is ours (it holds a plans
    key): the case is stored again in the current format."""
    old = folder / f"{case_id}.npz"
    try:
        with np.load(old, allow_pickle=False) as stored:
            ours = "plans_key" in stored.files
    except Exception:  # absent, unreadable, or someone else's
        return
    if ours:
        old.unlink()


def preprocess_dataset(plans: Plans, run_dir: str | Path) -> Path:
    """Preprocess every case of the plan into `run_dir/preprocessed` (atomic writes), skipping cases stored
    with the same plan settings. Returns the folder."""
    spec = plans.dataset_spec()
    out_dir = Path(run_dir) / PREPROCESSED_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    key = preprocessing_key(plans)
    todo = []
    for case_id in plans.dataset.case_ids:
        stored = stored_key(out_dir, case_id)
        _refuse_foreign_files(spec, out_dir, case_id, stored)
        if stored != key:
            todo.append(case_id)
    for case_id in tqdm(todo, desc="preprocess", unit="case", disable=None):
        image, label, geometry = load_case(spec, spec.case(case_id))
        write_case(
            out_dir,
            case_id,
            preprocess_image(image, geometry, plans),
            preprocess_label(label, geometry, plans) if label is not None else None,
            plans.dataset.num_classes,
            key,
            geometry.to_dict(),
        )
        _remove_older_format(out_dir, case_id)
    return out_dir
