"""Finished repeats on disk, so a stopped benchmark keeps what it finished and a rerun skips it.

One folder per (model, settings, slides, features): ``<results_dir>/<model>-<key>/``, where the
key hashes everything that changes the result (the candidate settings, the protocol apart from
its number of repeats, the slides with their labels, splits and patients, and a fingerprint of
the features). Each repeat writes ``repeat-<seed>.json`` (test probabilities by slide, metrics
and chosen settings) and, for the first repeat, ``repeat-<seed>.pt`` (the models that scored
each test slide, for heatmaps), the JSON last, so a JSON on disk means a finished repeat.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from histo_encoders.atomic import atomic_write, atomic_write_text

from .data import Bag
from .models import build_model

if TYPE_CHECKING:  # protocols imports this module; only the type is needed here
    from .protocols import ProtocolOptions
    from .train import TrainOptions

FORMAT = "histo-encoders-mil-repeat/1"


@dataclass
class RepeatResult:
    """One repeat: test probabilities and scoring models by bag position, and its metrics."""

    seed: int
    probs: dict[int, np.ndarray]
    members: dict[int, list[nn.Module]] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def features_fingerprint(bags: Sequence[Bag]) -> str:
    """A cheap hash of the features: shape, dtype, first and last tile of every bag.

    Enough to tell two encoders' features (or two embeddings) apart without reading all of them.
    """
    digest = hashlib.sha256()
    for bag in bags:
        features = bag.features
        digest.update(f"{bag.slide_id}:{tuple(features.shape)}:{features.dtype}".encode())
        digest.update(features[:1].float().numpy().tobytes())
        digest.update(features[-1:].float().numpy().tobytes())
    return digest.hexdigest()


def run_key(
    bags: Sequence[Bag], candidates: Sequence[TrainOptions], options: ProtocolOptions
) -> str:
    """What identifies a run's result; the number of repeats is left out, so adding repeats
    reuses the finished ones."""
    protocol = {k: v for k, v in asdict(options).items() if k not in ("repeats", "results_dir")}
    identity = {
        "format": FORMAT,
        "candidates": [asdict(c) for c in candidates],
        "protocol": protocol,
        "slides": [(b.slide_id, b.label, b.split, b.patient_id) for b in bags],
        "features": features_fingerprint(bags),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class RepeatStore:
    """Saves and loads the finished repeats of one model under one protocol."""

    def __init__(self, folder: Path, bags: Sequence[Bag], model: str, n_classes: int) -> None:
        self.folder = folder
        self.bags = bags
        self.model = model
        self.n_classes = n_classes

    @classmethod
    def open(
        cls,
        results_dir: Path | None,
        bags: Sequence[Bag],
        candidates: Sequence[TrainOptions],
        options: ProtocolOptions,
        n_classes: int,
    ) -> RepeatStore | None:
        """The store of this run, or None when ``results_dir`` is None."""
        if results_dir is None:
            return None
        name = candidates[0].name
        folder = Path(results_dir) / f"{name}-{run_key(bags, candidates, options)[:16]}"
        return cls(folder, bags, candidates[0].model, n_classes)

    def __str__(self) -> str:
        return str(self.folder)

    def save(self, result: RepeatResult, *, keep_models: bool) -> None:
        """Write the repeat's models (if kept), then its JSON, each atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if keep_models:
            _atomic_torch_save(self._model_states(result), self._path(result.seed, ".pt"))
        record = {
            "format": FORMAT,
            "seed": result.seed,
            "metrics": result.metrics,
            "probs": {
                self.bags[i].slide_id: np.asarray(p).tolist() for i, p in result.probs.items()
            },
        }
        atomic_write_text(self._path(result.seed, ".json"), json.dumps(record, default=_plain))

    def load(self, seed: int) -> RepeatResult | None:
        """The saved repeat ``seed``, or None if it has not finished."""
        path = self._path(seed, ".json")
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        position = {bag.slide_id: i for i, bag in enumerate(self.bags)}
        probs = {position[s]: np.asarray(p) for s, p in record["probs"].items()}
        members = self._load_members(seed, record["metrics"])
        return RepeatResult(seed, probs, members, record["metrics"])

    def _path(self, seed: int, suffix: str) -> Path:
        return self.folder / f"repeat-{seed}{suffix}"

    def _model_states(self, result: RepeatResult) -> list[dict[str, Any]]:
        """One entry per group of test slides scored by the same models."""
        groups: dict[int, dict[str, Any]] = {}
        for position, models in result.members.items():
            group = groups.setdefault(id(models[0]), {"slides": [], "states": []})
            group["slides"].append(self.bags[position].slide_id)
            if not group["states"]:
                group["states"] = [_cpu_state(m) for m in models]
        return list(groups.values())

    def _load_members(self, seed: int, metrics: dict) -> dict[int, list[nn.Module]]:
        path = self._path(seed, ".pt")
        if not path.is_file():
            return {}
        groups = torch.load(path, map_location="cpu", weights_only=True)
        options = metrics["folds"][0]["model_options"]
        in_dim = int(self.bags[0].features.shape[1])
        position = {bag.slide_id: i for i, bag in enumerate(self.bags)}
        members: dict[int, list[nn.Module]] = {}
        for group in groups:
            models = [self._rebuild(state, in_dim, options) for state in group["states"]]
            for slide_id in group["slides"]:
                members[position[slide_id]] = models
        return members

    def _rebuild(self, state: dict, in_dim: int, options: dict) -> nn.Module:
        model = build_model(self.model, in_dim, self.n_classes, **options)
        model.load_state_dict(state)
        return model.eval()


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON")


def _atomic_torch_save(obj: object, path: Path) -> None:
    atomic_write(path, lambda temporary: torch.save(obj, temporary))
