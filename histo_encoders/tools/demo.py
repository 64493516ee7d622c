"""``histo-encoders demo``: the whole pipeline on a slide it writes itself, in seconds, offline.

No weights can be assumed reachable, and quietly embedding with random weights is the worst bug
an encoder library can have. So by default the demo builds an encoder that says what it is: an
*untrained* small ResNet (fixed seed) exported as an ordinary encoder folder whose name,
description, licence and model card all say "untrained, features are meaningless", loaded
through the same ``load(folder)`` as any real encoder, and the run prints that warning. With
``encoder=`` a real encoder is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

DEMO_ENCODER_NAME = "untrained-demo"
DEMO_ARCHITECTURE = "resnet10t"  # ~5M parameters: a CPU embeds the demo slide in seconds
DEMO_SEED = 0
DEMO_MPP = 0.5
DEMO_TILE_SIZE = 224
UNTRAINED_WARNING = (
    "UNTRAINED DEMO ENCODER: randomly initialised weights (seed 0), for demonstrating the "
    "pipeline only. Its features are meaningless: never use them for analysis. "
    "Pass --encoder NAME to embed with a real encoder."
)
_SLIDE_SIZE = (2048, 1536)  # level-0 px at 0.5 um/px: ~1 x 0.8 mm, about 20 tissue tiles


@dataclass(frozen=True)
class DemoResult:
    """What the demo did: the slide it wrote, the encoder used and the run's summary."""

    slide: Path
    encoder: str
    untrained: bool
    summary: Any
    features_path: Path | None
    features_shape: tuple[int, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the slide was embedded."""
        return not self.summary.failed

    def report(self) -> str:
        """The text the command prints."""
        lines = []
        if self.untrained:
            lines += [_banner(UNTRAINED_WARNING)]
        lines += [
            f"slide:     {self.slide} (synthetic, {DEMO_MPP} um/px)",
            f"encoder:   {self.encoder}",
            self.summary.format(),
        ]
        if self.features_path is not None:
            lines += [
                f"features:  {self.features_path}  shape {self.features_shape}",
                "provenance:",
                *(f"  {key}: {value}" for key, value in self.provenance.items()),
            ]
        if self.untrained:
            lines += [_banner(UNTRAINED_WARNING)]
        return "\n".join(lines)


def run_demo(
    out_dir: str | Path = "histo-encoders-demo",
    *,
    encoder: str | None = None,
    device: str = "auto",
) -> DemoResult:
    """Write a synthetic slide into ``out_dir``, embed it, and describe the result.

    ``encoder=None`` builds the labelled untrained demo encoder (see module docstring); a name,
    hub id or folder uses that encoder. Loading errors of ``histo_encoders.load`` propagate.
    """
    from histo_encoders.encoders.load import load
    from histo_encoders.pipeline.embed import EmbedOptions
    from histo_encoders.pipeline.run import embed_slides, output_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slide = write_demo_slide(out / "demo-slide.svs")
    folder = encoder or str(write_demo_encoder(out / DEMO_ENCODER_NAME))
    model = load(folder)
    features_dir = out / "features"
    # The demo shows a real run each time, not a resume that skips the slide.
    output_path(features_dir, slide).unlink(missing_ok=True)
    options = EmbedOptions(device=device, batch_size=16, workers=1)
    summary = embed_slides([slide], model, features_dir, options, preview=True, progress=False)
    return _result(slide, model, encoder is None, summary, output_path(features_dir, slide))


def write_demo_slide(path: Path) -> Path:
    """A small synthetic Aperio-style slide with two tissue regions."""
    from histo_encoders.tools.synthetic import write_synthetic_slide

    width, height = _SLIDE_SIZE
    return write_synthetic_slide(path, width=width, height=height, mpp=DEMO_MPP, kind="svs").path


def demo_encoder_config() -> Any:
    """The EncoderConfig of the untrained demo encoder: every text field carries the warning."""
    from histo_encoders.encoders.config import IMAGENET_MEAN, IMAGENET_STD, EncoderConfig

    return EncoderConfig(
        name=DEMO_ENCODER_NAME,
        architecture=DEMO_ARCHITECTURE,
        num_features=512,
        tile_size=DEMO_TILE_SIZE,
        mpp=DEMO_MPP,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        license="untrained demo weights: no licence needed, no use beyond the demo",
        ssl_method="none: untrained (random initialisation, seed 0)",
        training_data="none: untrained",
        citation="",
        description=UNTRAINED_WARNING,
    )


def write_demo_encoder(folder: Path) -> Path:
    """Export the untrained demo encoder (timm resnet10t, seed 0) as an encoder folder."""
    import timm

    from histo_encoders.encoders.publish import export_encoder

    # A private generator: the demo must not reseed the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_SEED)
        model = timm.create_model(DEMO_ARCHITECTURE, pretrained=False, num_classes=0)
    notes = f"**{UNTRAINED_WARNING}**"
    return export_encoder(
        folder, model.state_dict(), demo_encoder_config(), card_notes=notes, overwrite=True
    )


def _result(
    slide: Path, model: torch.nn.Module, untrained: bool, summary: Any, features_path: Path
) -> DemoResult:
    from histo_encoders.pipeline.features import read_features

    name = model.histo_config.name  # loaded by load(), which always attaches the record
    if summary.failed or not features_path.exists():
        return DemoResult(slide, name, untrained, summary, None)
    features, _, attrs = read_features(features_path)
    keys = (
        "encoder",
        "hub_id",
        "revision",
        "weights_sha256",
        "target_mpp",
        "patch_size",
        "patch_size_level0",
        "level",
        "slide_mpp",
        "slide_mpp_source",
        "reader",
        "device",
        "precision",
        "histo_encoders_version",
        "torch_version",
        "timm_version",
        "openslide_version",
    )
    provenance = {key: attrs.get(key) for key in keys}
    return DemoResult(
        slide, name, untrained, summary, features_path, tuple(features.shape), provenance
    )


def _banner(text: str) -> str:
    import textwrap

    rule = "!" * 80
    body = "\n".join(f"!! {line}" for line in textwrap.wrap(text, 76))
    return f"{rule}\n{body}\n{rule}"
