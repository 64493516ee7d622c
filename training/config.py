"""Typed configuration of a MoCo v2 pretraining run: YAML file + ``key.sub=value`` overrides.

Every option lives in one frozen dataclass section; the YAML file and the command line can only
set fields that exist (a typo is refused, never ignored). The resolved config is saved in the run
folder and inside each checkpoint, so a run can be reproduced and a resume can check it continues
the same experiment.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from histo_encoders.errors import ConfigError

BnMode = Literal["shuffle", "split", "sync", "plain"]
Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class ModelConfig:
    """Encoders and the MoCo v2 method (defaults: facebookresearch/moco, the MoCo v2 code)."""

    arch: str = "resnet50"
    model_args: Mapping[str, Any] = field(default_factory=dict)
    dim: int = 128  # projection output
    hidden_dim: int | None = None  # MLP hidden width; None = backbone width (2048 for resnet50)
    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.2
    # How the key encoder's BatchNorm is kept from leaking batch statistics (see distributed.py).
    bn_mode: BnMode = "shuffle"
    bn_splits: int = 8  # groups for bn_mode=split (single process)


@dataclass(frozen=True)
class AugmentConfig:
    """MoCo v2 aug+ plus histology options (vertical flips, 90-degree rotations, HED jitter)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # b, c, s, hue
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    hed_jitter: float = 0.0  # max relative change of each H, E, D stain concentration; 0 = off


@dataclass(frozen=True)
class DataConfig:
    """Where tiles come from and how they are cut."""

    source: Literal["slides", "folder"] = "slides"
    slides: str = ""  # folder of slides, a glob, or a text file with one path per line
    tiles_dir: str = ""  # folder of tile images when source=folder
    slide_mpp: float | None = None  # override for slides that do not record their mpp
    mpp: float = 0.5
    tile_size: int = 224
    min_tissue: float = 0.6
    max_tiles_per_slide: int = 10000
    samples_per_epoch: int = 0  # tiles drawn per epoch; 0 = every indexed tile once
    batch_size: int = 32  # per rank
    workers: int = 8
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    description: str = ""  # training data, in words, for the model card


@dataclass(frozen=True)
class OptimConfig:
    """SGD with linear lr scaling and a per-epoch cosine schedule, no warmup."""

    lr_per_256: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 200


@dataclass(frozen=True)
class KnnConfig:
    """Optional kNN monitor on labelled tiles (folders named by class)."""

    train_dir: str = ""
    val_dir: str = ""
    every_steps: int = 0  # 0 = off
    k: int = 20


@dataclass(frozen=True)
class CardConfig:
    """What the exported encoder's model card says beyond the training facts."""

    license: str = "unknown"
    description: str = ""
    citation: str = (
        "Chen, X., Fan, H., Girshick, R., He, K. Improved Baselines with Momentum Contrastive "
        "Learning. arXiv:2003.04297 (2020)"
    )


@dataclass(frozen=True)
class RunConfig:
    """Run folder, resume, precision and reproducibility."""

    out: str = "runs/moco"
    resume: Literal["auto", "always", "never"] = "auto"
    seed: int = 0
    deterministic: bool = False
    precision: Precision = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool = True
    device: str = "auto"
    cpu_threads: int = 0  # torch intra-op threads per process; 0 = torch's default
    log_every: int = 10
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at each epoch end
    max_steps: int = 0  # stop (with a checkpoint) after this global step; 0 = run every epoch
    dist_timeout_s: int = 1800


@dataclass(frozen=True)
class PretrainConfig:
    """The whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    card: CardConfig = field(default_factory=CardConfig)
    run: RunConfig = field(default_factory=RunConfig)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Read a YAML config (or start from defaults) and apply ``key.sub=value`` overrides.

    Values of overrides are parsed as YAML (``run.resume=never``, ``data.mpp=0.5``,
    ``model.model_args={layers: [1,1,1,1]}``). Raises ConfigError for an unknown key, a value
    of the wrong type, or an unreadable file.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(shipped_config(path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
    return _build(PretrainConfig, raw, "")


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


def shipped_config(path: str | Path) -> Path:
    """``path``, or a config shipped with the package by name (``moco_camelyon`` or
    ``moco_camelyon.yaml``) when no such file exists: installed, there is no checkout to
    point into."""
    path = Path(path)
    if path.exists():
        return path
    shipped = SHIPPED_CONFIGS / (path.name if path.suffix else f"{path.name}.yaml")
    return shipped if shipped.is_file() else path


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain dict (lists for tuples) of a config, fit for YAML, JSON and torch.save."""
    return _plain(dataclasses.asdict(config))


def save_config(config: PretrainConfig, path: str | Path, extra: Mapping[str, Any]) -> None:
    """Write the resolved config plus provenance (``extra``: versions, world size) as YAML."""
    body = {"config": config_to_dict(config), **_plain(dict(extra))}
    Path(path).write_text(yaml.safe_dump(body, sort_keys=False))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"Cannot read config {path}: {err}. Give a readable YAML file.") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config {path} must be a mapping of sections (model:, data:, ...).")
    return loaded


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(
            f"Override {item!r} is not of the form key.sub=value (e.g. data.mpp=0.5)."
        )
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"Cannot parse the value of override {item!r}: {err}") from err


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"Override {key!r}: {part!r} is a value, not a section.")
        node = child
    node[leaf] = value


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Config section {where or '<root>'!r} must be a mapping, got {raw!r}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"Unknown config key(s) {[f'{where}{u}' for u in unknown]}; "
            f"section {where or '<root>'!r} has {sorted(names)}."
        )
    values = {name: _coerce(hints[name], raw[name], f"{where}{name}") for name in raw}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not one of {list(args)}.")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} needs a list of {len(args)} values, got {value!r}.")
        return tuple(_coerce(a, v, key) for a, v in zip(args, value, strict=True))
    if origin in (Mapping, dict) or hint is Any:
        if origin is not None and not isinstance(value, Mapping):
            raise ConfigError(f"{key} needs a mapping, got {value!r}.")
        return dict(value) if isinstance(value, Mapping) else value
    return _scalar(hint, value, key)


def _scalar(hint: type, value: Any, key: str) -> Any:
    # YAML reads "1e-4" as a string and "5" as an int: accept ints for floats, refuse the rest.
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key}={value!r} must be of type {hint.__name__}.")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)  # str subclasses (torch.__version__) are not safe-dumpable
    return value
