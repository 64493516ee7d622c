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
from histo_encoders.encoders import hub, pooling, trust
from histo_encoders.encoders.checks import check_config
from histo_encoders.encoders.config import EncoderConfig
from histo_encoders.encoders.registry import get_config, is_registered, list_encoders, suggest
from histo_encoders.errors import (
    ConfigError,
    CorruptWeightsError,
    EncoderNotPublishedError,
    GatedRepoAccessError,
    InvalidHubReferenceError,
    MissingWeightsError,
    UnknownEncoderError,
    UnpinnedRevisionError,
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
    allow_unpinned: bool = False,
) -> torch.nn.Module:
    """Return a pretrained encoder in eval mode whose output is the embedding its authors define.

    ``name_or_id`` is a registry name or alias (``"moco-camelyon"``), a hub id
    (``"hf-hub:org/name@revision"``), a local encoder folder or a ``.safetensors`` file beside
    its ``config.json``. ``revision`` asks for another hub revision: for a registered encoder
    (by any name, alias or hub id) a revision that resolves to a commit other than the pinned
    one needs ``allow_unpinned=True``, and those weights are then checked against the hash
    recorded the first time that commit was loaded.

    The module is the timm model itself (pooling "timm" or "cls") or a thin wrapper around it
    (pooling "cls+mean", see :mod:`.pooling`); ``num_features`` is the embedding's width. It
    carries ``pretrained_cfg`` (so ``timm.data.resolve_model_data_config`` gives the right
    preprocessing), ``histo_config`` (the EncoderConfig) and ``histo_provenance`` (an
    :class:`EncoderProvenance`).

    Raises UnknownEncoderError, EncoderNotPublishedError, InvalidHubReferenceError,
    UnpinnedRevisionError, WeightsUnavailableError (HubTimeoutError), GatedRepoAccessError,
    ChecksumMismatchError, TrustRecordError, CorruptWeightsError, WeightsMismatchError or
    ConfigError.
    """
    fetched = fetch(name_or_id, revision=revision, allow_unpinned=allow_unpinned)
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


def fetch(
    name_or_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    allow_unpinned: bool = False,
) -> FetchedEncoder:
    """Resolve ``name_or_id``, download what is missing and verify the weights' sha256.

    Every spelling of a registered encoder's weights (name, alias, ``hf-hub:`` id of its
    repository, any revision) is held to the registry's pin; see :func:`load`.
    """
    text = os.fspath(name_or_id)
    if revision is not None and (problem := hub.revision_problem(revision)):
        raise InvalidHubReferenceError(str(revision), problem)
    if isinstance(name_or_id, str) and is_registered(text):
        return _fetch_registered(get_config(text), revision, allow_unpinned)
    if text.startswith(hub.HUB_PREFIX):
        ref = _with_revision(hub.parse_hub_id(text), revision)
        record = _record_of_repo(ref.repo_id)
        if record is not None:
            return _fetch_registered(record, ref.revision, allow_unpinned)
        return _fetch_hub_id(ref)
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            raise ConfigError(f"revision={revision!r} applies to hub encoders, not to {path}")
        return _fetch_local(path)
    raise UnknownEncoderError(text, suggest(text))


def _with_revision(ref: hub.HubRef, revision: str | None) -> hub.HubRef:
    if revision and ref.revision and revision != ref.revision:
        raise ConfigError(f"two revisions given: {ref} and revision={revision!r}; give one")
    return hub.HubRef(ref.repo_id, revision or ref.revision)


def _record_of_repo(repo_id: str) -> EncoderConfig | None:
    """The published registered record whose weights live in ``repo_id``, if any."""
    for name in list_encoders():
        config = get_config(name)
        if config.published and config.hub_id and hub.same_repo(config.hub_id, repo_id):
            return config
    return None


def _fetch_registered(
    config: EncoderConfig, revision: str | None, allow_unpinned: bool
) -> FetchedEncoder:
    if not config.published or config.hub_id is None:
        raise EncoderNotPublishedError(
            config.name,
            "Train it with training/ (see training/README.md), export it with "
            "`histo-encoders publish`, and load the exported folder: "
            f"histo_encoders.load('path/to/{config.name}'). Published encoders: "
            "`histo-encoders list`.",
        )
    check_config(config, source=f"the registry record {config.name!r}")
    ref = hub.HubRef(config.hub_id, revision or config.revision)
    commit = _from_record_repo(config, ref, hub.resolve_commit, ref)
    # The pin is a commit and the sha256 of its weights: it holds for whatever revision
    # resolves to that commit. A record that pins only a sha256 pins the file at any commit.
    off_pin = config.revision is not None and commit != config.revision
    if off_pin and not allow_unpinned:
        raise UnpinnedRevisionError(config.name, ref.revision or "main", commit, config.revision)
    expected = None if off_pin else config.sha256
    weights = _from_record_repo(config, ref, hub.download, ref.at(commit), config.weights_file)
    provenance = _verify_hub_weights(
        config.name, weights, ref, commit, expected, "the registry record"
    )
    return FetchedEncoder(config, weights, provenance)


def _from_record_repo(config: EncoderConfig, ref: hub.HubRef, call: Any, *args: Any) -> Any:
    """``call(*args)`` on the record's repo; a refusal of a repo the record knows is gated is
    the gate, even when the hub does not say so."""
    try:
        return call(*args)
    except WeightsUnavailableError as error:
        status = hub.refused_status(error)
        if config.gated and status:
            raise GatedRepoAccessError(ref.repo_id, ref.revision, status) from error
        raise


def _fetch_hub_id(ref: hub.HubRef) -> FetchedEncoder:
    commit = hub.resolve_commit(ref)
    at_commit = ref.at(commit)
    # config.json and the weights come from the same commit, whatever the branch does meanwhile.
    config_path = hub.download(at_commit, hub.CONFIG_NAME)
    trust.verify_advertised(config_path)
    config = folder_format.from_config_json(
        _read_json(config_path), default_name=ref.repo_id, source=f"config.json of {at_commit}"
    )
    weights = hub.download(at_commit, hub.WEIGHTS_NAME)
    provenance = _verify_hub_weights(
        config.name, weights, ref, commit, config.sha256, f"config.json of {at_commit}"
    )
    return FetchedEncoder(config, weights, provenance)


def _verify_hub_weights(
    name: str,
    weights: Path,
    ref: hub.HubRef,
    commit: str,
    expected: str | None,
    source: str,
) -> EncoderProvenance:
    downloaded_from = hub.commit_of(weights)
    if downloaded_from is not None and downloaded_from != commit:
        raise ConfigError(f"{weights} belongs to commit {downloaded_from}, not {commit}")
    # The body must be what the hub advertised before any record may vouch for it.
    sha256 = trust.sha256_file(weights)
    trust.verify_advertised(weights, sha256)
    if expected:
        trust.verify_file(weights, expected, source, actual=sha256)
        checked = source
    else:
        key = f"{ref.repo_id}@{commit}/{weights.name}"
        sha256, checked = trust.verify_first_seen(weights, key, sha256=sha256)
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
        raise MissingWeightsError(
            f"{weights} not found: a local encoder folder holds its weights as "
            f"{' or '.join(_LOCAL_WEIGHTS)} beside config.json."
        )
    config = folder_format.from_config_json(
        _read_json(config_path), default_name=folder.name, source=str(config_path)
    )
    if config.sha256:
        sha256 = trust.verify_file(weights, config.sha256, str(config_path))
        checked = str(config_path)
    else:
        sha256, checked = trust.sha256_file(weights), "nothing (no hash in config.json)"
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

    try:
        model = timm.create_model(
            config.architecture, pretrained=False, num_classes=0, **timm_model_args(config)
        )
    except (RuntimeError, TypeError, ValueError, KeyError) as error:
        # An unknown architecture, or model_args it does not take: a configuration error.
        raise ConfigError(
            f"timm cannot build {config.architecture!r} with model_args "
            f"{dict(config.model_args)} for encoder {config.name!r}: {error}"
        ) from error
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
