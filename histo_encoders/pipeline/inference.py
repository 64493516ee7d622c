"""Running an encoder on batches of tiles: device, precision, normalization.

A :class:`TileBatch` holds either uint8 tiles or tiles already normalized by the reader that cut
them (the TIFF reader does it in its threads on the CPU, where that is the fast path). uint8
tiles travel to the device as they are (a quarter of float32's bytes) and are converted there:
/255, (x - mean) / std with the mean and std the *weights* expect (taken from
``model.histo_config``, else from timm's ``pretrained_cfg``, never defaulted). On CUDA the copy
is non-blocking from pinned memory, the model runs in channels_last under bf16 autocast, and
``torch.compile`` is optional.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from histo_encoders.encoders import EncoderProvenance, normalize_batch
from histo_encoders.errors import ConfigError, DeviceUnavailableError

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class EncoderSpec:
    """What the pipeline needs to know about an encoder: its input and where it came from."""

    name: str
    num_features: int
    tile_size: int | None
    mpp: float | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hub_id: str | None = None
    revision: str | None = None
    weights_sha256: str | None = None
    provenance: EncoderProvenance | None = None
    architecture: str = ""
    model_args: Mapping[str, Any] = field(default_factory=dict)
    pooling: str = "timm"


@dataclass(frozen=True, eq=False)
class TileBatch:
    """Tiles on their way to the model: ``rows`` of the output they fill, and ``tiles``
    (B, t, t, 3), uint8 RGB, or float32 already normalized when ``normalized``."""

    rows: np.ndarray
    tiles: torch.Tensor
    normalized: bool = False

    def __len__(self) -> int:
        return len(self.rows)


def resolve_device(device: str = "auto", *, local_rank: int = 0) -> torch.device:
    """Turn "auto" | "cpu" | "cuda" | "cuda:i" into a device that exists here.

    "auto" and plain "cuda" pick ``cuda:local_rank`` so each torchrun process gets its own GPU.
    Raises DeviceUnavailableError when CUDA (or that GPU) is not available; nothing falls back
    to the CPU silently.
    """
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else _cpu()
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise DeviceUnavailableError(
            f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from error
    if chosen.type == "cpu":
        return chosen
    if chosen.type != "cuda":
        raise DeviceUnavailableError(f"Device {device!r} is not supported: use 'cpu' or 'cuda'.")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"Device {device!r} was asked for but CUDA is not available here "
            f"(torch {torch.__version__}). Use --device cpu, or install a CUDA build of torch."
        )
    index = local_rank if chosen.index is None else chosen.index
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"Device cuda:{index} does not exist: this machine has "
            f"{torch.cuda.device_count()} GPU(s)."
        )
    return torch.device(f"cuda:{index}")


def _cpu() -> torch.device:
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """Resolve "auto": bf16 autocast on a GPU that supports it, fp32 on the CPU.

    On the CPU bf16 autocast is slower than fp32 for ResNets (timm resnet50 measured on a
    2-core x86 VM: ~7 tiles/s fp32, ~1.5 under bf16 autocast), so "auto" does not choose it
    there; asking for "bf16" explicitly still gets it. This is the one precision rule of the
    package: training resolves its precision here too.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def encoder_spec(model: torch.nn.Module) -> EncoderSpec:
    """Read an encoder's input requirements and provenance from the model itself.

    A model from ``histo_encoders.load`` carries ``histo_config``; a plain timm model needs a
    ``pretrained_cfg`` with ``mean`` and ``std``. Raises ConfigError when the normalization or
    the feature width cannot be found, rather than guessing ImageNet's.
    """
    # Set by histo_encoders.load(); any other module simply lacks them (not an error).
    provenance: EncoderProvenance | None = getattr(model, "histo_provenance", None)
    config = getattr(model, "histo_config", None)
    if config is None:
        return _spec_from_pretrained_cfg(model)
    return EncoderSpec(
        name=config.name,
        num_features=int(config.num_features),
        tile_size=int(config.tile_size),
        mpp=None if config.mpp is None else float(config.mpp),
        mean=_triple(config.mean),
        std=_triple(config.std),
        hub_id=(provenance and provenance.hub_id) or config.hub_id,
        # The commit the weights were resolved to beats the revision that was asked for.
        revision=(provenance and (provenance.commit or provenance.revision)) or config.revision,
        weights_sha256=(provenance and provenance.weights_sha256) or config.sha256,
        provenance=provenance,
        architecture=config.architecture,
        model_args=dict(config.model_args),
        pooling=config.pooling,
    )


def _spec_from_pretrained_cfg(model: torch.nn.Module) -> EncoderSpec:
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if "mean" not in cfg or "std" not in cfg:
        raise ConfigError(
            f"{type(model).__name__} has neither `histo_config` nor a `pretrained_cfg` with mean "
            "and std, so the normalization its weights expect is unknown. Load it with "
            "histo_encoders.load(), or set model.pretrained_cfg = {'mean': ..., 'std': ...}."
        )
    num_features = getattr(model, "num_features", None)
    if not isinstance(num_features, int):
        raise ConfigError(
            f"{type(model).__name__} has no integer `num_features`: use a timm model created "
            "with num_classes=0, or load it with histo_encoders.load()."
        )
    input_size = cfg.get("input_size")
    return EncoderSpec(
        name=str(cfg.get("architecture") or type(model).__name__),
        num_features=num_features,
        tile_size=int(input_size[-1]) if input_size else None,
        mpp=None,
        mean=_triple(cfg["mean"]),
        std=_triple(cfg["std"]),
        hub_id=cfg.get("hf_hub_id"),
        architecture=str(cfg.get("architecture") or ""),
    )


def _triple(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the model's parameters and buffers (for models loaded without a file hash).

    Lets resume tell two different in-memory models apart; it is not the file's sha256.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class PreparedEncoder:
    """An encoder placed on its device, ready to turn uint8 tile batches into features.

    Call it with a (B, H, W, 3) uint8 tensor (pinned on CUDA for an asynchronous copy); it returns
    (B, D) float32 features on the device. Holds the model, its :class:`EncoderSpec`, the device
    and the precision actually used. The model given is put in eval mode and moved to the device
    (and to channels_last) in place, as ``Module.to`` does.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: torch.device,
        precision: Literal["fp32", "bf16"],
        channels_last: bool = True,
        compile: bool = False,
        pad_to: int | None = None,
    ) -> None:
        self.spec = encoder_spec(model)
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.compiled = compile
        # A compiled model recompiles for every new batch shape: pad the last batch instead.
        self._pad_to = pad_to if compile else None
        if device.type == "cuda":
            # Else pinned-memory threads and caches open a context on cuda:0 in every rank.
            torch.cuda.set_device(device)
        model = model.eval().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._forward = torch.compile(model) if compile else model

    def normalize(self, tiles: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 on any device -> (B, 3, H, W) float32 normalized on the device."""
        return model_input(
            TileBatch(np.arange(len(tiles)), tiles),
            self.device,
            self.spec.mean,
            self.spec.std,
            channels_last=self.channels_last,
        )

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        """Features (B, D) float32 on the device for a (B, H, W, 3) uint8 batch."""
        return self.features(TileBatch(np.arange(len(tiles)), tiles))

    @torch.inference_mode()
    def features(self, batch: TileBatch) -> torch.Tensor:
        """Features (B, D) float32 on the device for a batch, normalized or uint8."""
        tiles = batch.tiles
        count = tiles.shape[0]
        if self._pad_to is not None and count < self._pad_to:
            padding = tiles.new_zeros((self._pad_to - count, *tiles.shape[1:]))
            tiles = torch.cat([tiles, padding])
        x = model_input(
            TileBatch(batch.rows, tiles, batch.normalized),
            self.device,
            self.spec.mean,
            self.spec.std,
            channels_last=self.channels_last,
        )
        copied = self._record_copy()
        with self._autocast():
            features = self._forward(x)
        if copied is not None:
            # Readers may reuse the host buffer for the next batch: it must not be overwritten
            # before the asynchronous copy has read it. The forward pass is already queued.
            copied.synchronize()
        return features[:count].float()

    def _record_copy(self) -> torch.cuda.Event | None:
        if self.device.type != "cuda":
            return None
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def model_input(
    batch: TileBatch,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    channels_last: bool = True,
) -> torch.Tensor:
    """A batch as the model takes it: (B, 3, t, t) float32 normalized, on ``device``.

    Tiles the reader already normalized are only moved and viewed as NCHW (channels_last is
    then their memory layout as is); uint8 tiles are normalized on the device.
    """
    x = batch.tiles.to(device, non_blocking=True)
    if not batch.normalized:
        return normalize_batch(x, mean, std, channels_last=channels_last)
    x = x.permute(0, 3, 1, 2)
    return x if channels_last else x.contiguous()


def to_numpy_features(features: torch.Tensor) -> np.ndarray:
    """Device features -> (B, D) float32 numpy on the host."""
    return features.detach().to("cpu").numpy().astype(np.float32, copy=False)
