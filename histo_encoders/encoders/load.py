"""``load()``: resolve a name -> fetch the files -> verify them -> build the timm model -> load strictly.

Each step is one function, and each either succeeds or raises a typed error: there is no path
that hands back a model with random or partial weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from histo_encoders.encoders import folder as folder_format
from histo_encoders.encoders import hub, pooling
from histo_encoders.encoders.config import EncoderConfig
from histo_encoders.encoders.registry import get_config, is_registered, suggest
from histo_encoders.errors import (
    ConfigError,
    CorruptWeightsError,
    EncoderNotPublishedError,
    GatedRepoAccessError,
    UnknownEncoderError,
    WeightsMismatchError,
    WeightsUnavailableError,
)

# The only keys a checkpoint may have that our pooled-feature model lacks: a classification
# head (timm's ImageNet weights carry one). Anything else is a mismatch.
_DROPPABLE_HEAD = frozenset({"fc.weight", "fc.bias"})
# Layer classes a config.json cannot carry (the authors pass them in code, e.g. Virchow's
# SwiGLU MLP): records name them, and only these names are resolved, from timm.layers.
_LAYER_CLASSES = frozenset({"SwiGLUPacked", "SwiGLU", "GluMlp", "Mlp"})


@dataclass(frozen=True)
class EncoderProvenance:
    """Where a loaded encoder's weights came from and how they were checked.

    ``source`` is "hub" or "local"; ``revision`` is what was asked for and ``commit`` the hub
    commit it resolved to; ``sha256_checked_against`` names what vouched for ``weights_sha256``
    (the registry record, a config.json, the hash recorded at first download, or nothing).
    """

    encoder: str
    source: Literal["hub", "local"]
    hub_id: str | None
    revision: str | None
    commit: str | None
    weights_sha256: str
    sha256_checked_against: str
    weights_path: str
    dropped_keys: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), for JSON and HDF5 attributes."""
        return {**dataclasses.asdict(self), "dropped_keys": list(self.dropped_keys)}


@dataclass(frozen=True)
class FetchedEncoder:
    """Verified local weights, the record describing them and where they came from."""

    config: EncoderConfig
    weights_path: Path
    provenance: EncoderProvenance


def load(
    name_or_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
) -> torch.nn.Module:
    """Return a pretrained encoder in eval mode whose output is the embedding its authors define.

    ``name_or_id`` is a registry name or alias (``"moco-camelyon"``), a hub id
    (``"hf-hub:org/name@revision"``), a local encoder folder or a ``.safetensors`` file beside
    its ``config.json``. ``revision`` overrides the pinned hub commit.

    The module is the timm model itself (pooling "timm" or "cls") or a thin wrapper around it
    (pooling "cls+mean", see :mod:`.pooling`); ``num_features`` is the embedding's width. It
    carries ``pretrained_cfg`` (so ``timm.data.resolve_model_data_config`` gives the right
    preprocessing), ``histo_config`` (the EncoderConfig) and ``histo_provenance`` (an
    :class:`EncoderProvenance`).

    Raises UnknownEncoderError, EncoderNotPublishedError, WeightsUnavailableError,
    GatedRepoAccessError, ChecksumMismatchError, CorruptWeightsError, WeightsMismatchError or
    ConfigError.
    """
    fetched = fetch(name_or_id, revision=revision)
    trunk = build_model(fetched.config)
    dropped = load_weights_strictly(trunk, read_weights(fetched.weights_path), fetched.config)
    model = pooling.apply_pooling(trunk, fetched.config.pooling)
    model.pretrained_cfg = model.default_cfg = trunk.pretrained_cfg
    model.histo_config = fetched.config
    model.histo_provenance = dataclasses.replace(
        fetched.provenance, dropped_keys=tuple(sorted(dropped))
    )
    model.eval()
    if device is not None:
        model.to(device)
    return model


def fetch(name_or_id: str | os.PathLike[str], *, revision: str | None = None) -> FetchedEncoder:
    """Resolve ``name_or_id``, download what is missing and verify the weights' sha256."""
    text = os.fspath(name_or_id)
    if isinstance(name_or_id, str) and is_registered(text):
        return _fetch_registered(get_config(text), revision)
    if text.startswith(hub.HUB_PREFIX):
        return _fetch_hub_id(hub.parse_hub_id(text), revision)
    path = Path(text).expanduser()
    if path.exists():
        return _fetch_local(path)
    raise UnknownEncoderError(text, suggest(text))


def _fetch_registered(config: EncoderConfig, revision: str | None) -> FetchedEncoder:
    if not config.published or config.hub_id is None:
        raise EncoderNotPublishedError(
            config.name,
            "Train it with training/ (see training/README.md), export it with "
            "`histo-encoders publish`, and load the exported folder: "
            f"histo_encoders.load('path/to/{config.name}'). Published encoders: "
            "`histo-encoders list`.",
        )
    ref = hub.HubRef(config.hub_id, revision or config.revision)
    # The record's hash vouches only for the commit it was pinned with.
    pinned = config.sha256 if ref.revision == config.revision else None
    weights = _download_record_file(ref, config)
    provenance = _verify_hub_weights(config.name, weights, ref, pinned, "the registry record")
    return FetchedEncoder(config, weights, provenance)


def _download_record_file(ref: hub.HubRef, config: EncoderConfig) -> Path:
    try:
        return hub.download(ref, config.weights_file)
    except WeightsUnavailableError as error:
        # The record knows the repo is gated: a refusal the hub did not mark as one is the gate.
        status = hub.refused_status(error)
        if config.gated and status:
            raise GatedRepoAccessError(ref.repo_id, ref.revision, status) from error
        raise


def _fetch_hub_id(ref: hub.HubRef, revision: str | None) -> FetchedEncoder:
    if revision and ref.revision and revision != ref.revision:
        raise ValueError(f"two revisions given: {ref} and revision={revision!r}; give one")
    ref = hub.HubRef(ref.repo_id, revision or ref.revision)
    document = _read_json(hub.download(ref, hub.CONFIG_NAME))
    config = folder_format.from_config_json(document, default_name=ref.repo_id)
    weights = hub.download(ref, hub.WEIGHTS_NAME)
    provenance = _verify_hub_weights(
        config.name, weights, ref, config.sha256, f"config.json of {ref}"
    )
    return FetchedEncoder(config, weights, provenance)


def _verify_hub_weights(
    name: str, weights: Path, ref: hub.HubRef, expected: str | None, source: str
) -> EncoderProvenance:
    commit = hub.commit_of(weights)
    if expected:
        sha256 = hub.verify_file(weights, expected, source)
        checked = source
    else:
        key = f"{ref.repo_id}@{commit or ref.revision or 'main'}/{weights.name}"
        sha256 = hub.verify_first_seen(weights, key)
        checked = "the hash recorded at first download"
    return EncoderProvenance(
        encoder=name,
        source="hub",
        hub_id=ref.repo_id,
        revision=ref.revision,
        commit=commit,
        weights_sha256=sha256,
        sha256_checked_against=checked,
        weights_path=str(weights),
    )


# timm's save_for_hf writes pytorch_model.bin unless asked for safetensors; both load.
_LOCAL_WEIGHTS = (hub.WEIGHTS_NAME, "pytorch_model.bin")


def _local_weights(folder: Path) -> Path:
    return next(
        (folder / n for n in _LOCAL_WEIGHTS if (folder / n).is_file()), folder / hub.WEIGHTS_NAME
    )


def _fetch_local(path: Path) -> FetchedEncoder:
    folder, weights = (path, _local_weights(path)) if path.is_dir() else (path.parent, path)
    config_path = folder / hub.CONFIG_NAME
    if not config_path.is_file():
        raise ConfigError(
            f"{config_path} not found: a local encoder needs config.json beside its weights. "
            "Create the folder with `histo-encoders convert` or `histo-encoders publish`."
        )
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} not found: expected the weights as {' or '.join(_LOCAL_WEIGHTS)}"
        )
    config = folder_format.from_config_json(_read_json(config_path), default_name=folder.name)
    if config.sha256:
        sha256 = hub.verify_file(weights, config.sha256, str(config_path))
        checked = str(config_path)
    else:
        sha256, checked = hub.sha256_file(weights), "nothing (no hash in config.json)"
    provenance = EncoderProvenance(
        encoder=config.name,
        source="local",
        hub_id=config.hub_id,
        revision=None,
        commit=None,
        weights_sha256=sha256,
        sha256_checked_against=checked,
        weights_path=str(weights.resolve()),
    )
    return FetchedEncoder(config, weights, provenance)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path} as JSON: {error}") from error


def build_model(config: EncoderConfig) -> torch.nn.Module:
    """Create the timm architecture (no classifier) with ``config``'s preprocessing.

    This is the network the weights load into; ``load()`` then applies the record's pooling.
    Raises ConfigError when the embedding width the pooling gives is not the record's.
    """
    import timm

    model = timm.create_model(
        config.architecture, pretrained=False, num_classes=0, **timm_model_args(config)
    )
    width = pooling.embedding_width(model, config.pooling)
    if config.num_features and width != config.num_features:
        raise ConfigError(
            f"{config.architecture} with {dict(config.model_args)} and pooling "
            f"{config.pooling!r} gives {width} features, but the record of {config.name!r} "
            f"says {config.num_features}"
        )
    cfg = folder_format.pretrained_cfg(config, source="histo-encoders")
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    return model


def timm_model_args(config: EncoderConfig) -> dict[str, Any]:
    """``config.model_args`` as timm's constructor takes them: layer names become classes.

    ``mlp_layer`` names a class of ``timm.layers`` and ``act_layer`` an activation timm knows
    (``"silu"``); raises ConfigError for any other name.
    """
    args = dict(config.model_args)
    if isinstance(args.get("mlp_layer"), str):
        import timm.layers

        if args["mlp_layer"] not in _LAYER_CLASSES:
            raise ConfigError(
                f"mlp_layer {args['mlp_layer']!r} of {config.name!r} is not one of "
                f"{sorted(_LAYER_CLASSES)}"
            )
        args["mlp_layer"] = getattr(timm.layers, args["mlp_layer"])
    if isinstance(args.get("act_layer"), str):
        from timm.layers import get_act_layer

        try:
            args["act_layer"] = get_act_layer(args["act_layer"])
        except (KeyError, ValueError) as error:
            raise ConfigError(f"act_layer {args['act_layer']!r} of {config.name!r}") from error
    return args


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, or a ``.bin`` state dict with ``torch.load(weights_only=True)``.

    ``weights_only`` unpickles tensors and plain containers only: a pickle that would run code
    or build other objects is refused. Callers hash the file before reading it.
    Raises CorruptWeightsError for a truncated or foreign file.
    """
    if path.suffix == ".bin":
        return _read_pickled_state_dict(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptWeightsError(str(path), str(error)) from error


def _classifier_keys(architecture: str) -> frozenset[str]:
    """The weight and bias of ``architecture``'s classification head, as timm names them
    (``head`` for ViTs, ``fc`` for ResNets): a folder saved with ``num_classes`` carries it."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(architecture)
    except Exception:
        return frozenset()
    heads = getattr(cfg, "classifier", None) or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    return frozenset(f"{head}.{p}" for head in heads for p in ("weight", "bias"))


def _read_pickled_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError... all mean "not this"
        raise CorruptWeightsError(str(path), f"{type(error).__name__}: {error}") from error
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CorruptWeightsError(str(path), "it does not hold a flat state dict of tensors")
    return dict(state)


def load_weights_strictly(
    model: torch.nn.Module, state: dict[str, torch.Tensor], config: EncoderConfig
) -> set[str]:
    """Load ``state`` into ``model``: every key must match in name and shape.

    Only a classification head (``fc.*``) may be dropped; the dropped keys are returned.
    Raises WeightsMismatchError otherwise.
    """
    expected = model.state_dict()
    dropped = set(state) & (_DROPPABLE_HEAD | _classifier_keys(config.architecture)) - set(expected)
    state = {k: v for k, v in state.items() if k not in dropped}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        raise WeightsMismatchError(config.architecture, missing, unexpected, wrong_shape)
    model.load_state_dict(state, strict=True)
    return dropped
