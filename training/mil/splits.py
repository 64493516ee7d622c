"""Patient-level splits: one patient's slides always land on the same side of every split.

Splits are stratified by label where the number of patients allows it, and seeded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from .errors import ProtocolError


def patient_folds(
    labels: Sequence[int], patients: Sequence[str], n_folds: int, seed: int
) -> list[np.ndarray]:
    """Split positions ``0..n-1`` into ``n_folds`` disjoint folds, grouped by patient.

    Returns the held-out positions of each fold (their union is every position).

    Raises:
        ProtocolError: fewer patients than folds, or a class held by fewer patients than folds.
    """
    labels, patients = np.asarray(labels), np.asarray(patients)
    _check_enough_patients(labels, patients, n_folds)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    positions = np.arange(len(labels))
    return [held for _, held in splitter.split(positions, labels, groups=patients)]


def _check_enough_patients(labels: np.ndarray, patients: np.ndarray, n_folds: int) -> None:
    if n_folds < 2:
        raise ProtocolError(f"A split needs at least 2 folds, got {n_folds}.")
    for label in np.unique(labels):
        n_patients = len(np.unique(patients[labels == label]))
        if n_patients < n_folds:
            raise ProtocolError(
                f"Class {label} has {n_patients} patient(s), fewer than the {n_folds} folds asked "
                "for: every fold needs one of each class. Use fewer folds or a larger validation "
                "fraction."
            )


def validation_split(
    labels: Sequence[int], patients: Sequence[str], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``fraction`` of the patients (stratified) for validation.

    Returns ``(train_positions, validation_positions)``.

    Raises:
        ProtocolError: ``fraction`` outside (0, 0.5] or too few patients per class.
    """
    if not 0 < fraction <= 0.5:
        raise ProtocolError(f"Validation fraction must be in (0, 0.5], got {fraction}.")
    held = patient_folds(labels, patients, max(2, round(1 / fraction)), seed)[0]
    rest = np.setdiff1d(np.arange(len(labels)), held)
    return rest, held
