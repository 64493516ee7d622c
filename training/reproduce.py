"""Reproduce the paper's comparison: embed slides with each encoder, benchmark MIL models on each.

Example::

    python -m training.reproduce --slides /data/camelyon16 --labels camelyon16.csv \\
        --encoders imagenet moco-camelyon --out results/

Any registered encoder can take part (``histo-encoders list``), e.g. ``--encoders imagenet
lunit-mocov2 uni2-h virchow2``: each is embedded at its own resolution, tile size, normalization
and pooling, and the MIL models stay the same. Every encoder is fetched and verified before any
slide is embedded, so an unknown name, a gated repository without access or a wrong hash stops
the run at once rather than after hours of embedding the others.

Writes ``<out>/features/<encoder>/<slide_id>.h5`` (reused on a second run), ``results.json``,
``results.md`` (encoders side by side), ``roc.png`` and ``heatmaps/*.png``.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from histo_encoders.encoders import fetch
from histo_encoders.pipeline import EmbedOptions, collect_slides, embed_slides

from .mil.benchmark import print_outputs, run_models, write_outputs
from .mil.cli import (
    HelpFormatter,
    add_benchmark_arguments,
    options_by_model,
    protocol_options,
    train_options,
)
from .mil.data import Bag, LabelTable, load_bags, read_labels
from .mil.errors import EmbeddingRunError, MilDataError
from .mil.heatmap import heatmap_for_slide
from .mil.protocols import Evaluation, ProtocolOptions
from .mil.train import TrainOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReproduceConfig:
    """Everything one ``python -m training.reproduce`` run needs."""

    slides: Path
    labels: Path
    encoders: tuple[str, ...]
    out: Path
    models: tuple[str, ...]
    protocol: ProtocolOptions
    train: TrainOptions
    embed: EmbedOptions
    n_extreme: int = 10
    class_names: tuple[str, ...] | None = None
    heatmaps: bool = True


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training.reproduce`` parser."""
    parser = argparse.ArgumentParser(
        prog="python -m training.reproduce",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--slides", type=Path, required=True, help="folder of slide files")
    parser.add_argument("--labels", type=Path, required=True, help="CSV: slide_id,label,...")
    parser.add_argument(
        "--encoders",
        nargs="+",
        required=True,
        help="registered names (`histo-encoders list`), hub ids or folders",
    )
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--mpp", type=float, default=None, help="default: each encoder's own")
    parser.add_argument("--tile-size", type=int, default=None, help="default: each encoder's own")
    parser.add_argument("--embed-batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="tile reader processes")
    parser.add_argument("--no-heatmaps", action="store_true")
    add_benchmark_arguments(parser)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> ReproduceConfig:
    """Parse the command line into a frozen :class:`ReproduceConfig`."""
    args = build_parser().parse_args(argv)
    embed = EmbedOptions(
        mpp=args.mpp,
        tile_size=args.tile_size,
        batch_size=args.embed_batch_size,
        device=args.device or "auto",
    )
    if args.workers is not None:
        embed = embed.with_updates(workers=args.workers)
    return ReproduceConfig(
        slides=args.slides,
        labels=args.labels,
        encoders=tuple(args.encoders),
        out=args.out,
        models=tuple(args.model),
        protocol=protocol_options(args),
        train=train_options(args),
        embed=embed,
        n_extreme=args.n_extreme,
        class_names=tuple(args.classes) if args.classes else None,
        heatmaps=not args.no_heatmaps,
    )


def folder_name(encoder: str) -> str:
    """A file-system-safe folder name for an encoder name, hub id or path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(encoder.rstrip("/")).name) or "encoder"


def find_slides(slides_dir: Path, labels: LabelTable) -> dict[str, Path]:
    """Map every labelled slide id to its file (matched by file stem).

    Raises:
        MilDataError: some labelled slides have no file in ``slides_dir``.
    """
    by_stem = {path.stem: path for path in collect_slides([slides_dir])}
    missing = [row.slide_id for row in labels.rows if row.slide_id not in by_stem]
    if missing:
        raise MilDataError(
            f"{len(missing)} labelled slide(s) have no file in {slides_dir} (e.g. {missing[:5]}); "
            "slide files must be named <slide_id>.<extension>."
        )
    return {row.slide_id: by_stem[row.slide_id] for row in labels.rows}


def fetch_encoders(encoders: Sequence[str], loaded: Mapping[str, nn.Module]) -> None:
    """Resolve, download and verify every encoder not given as a loaded model.

    Raises UnknownEncoderError, GatedRepoAccessError, WeightsUnavailableError or
    ChecksumMismatchError (histo_encoders.errors) for the first that cannot be used.
    """
    for encoder in encoders:
        if encoder not in loaded:
            fetch(encoder)


def embed_encoder(
    slides: Sequence[Path],
    encoder: str | nn.Module,
    out_dir: Path,
    options: EmbedOptions,
) -> Path:
    """Embed ``slides`` with ``encoder`` into ``out_dir`` (one ``<stem>.h5`` each); returns it.

    The one call into the library's whole-slide pipeline; finished files are kept on a rerun.

    Raises:
        EmbeddingRunError: one or more slides failed (the message lists them).
    """
    summary = embed_slides(list(slides), encoder, out_dir, options, progress=False)
    if summary.failed:
        raise EmbeddingRunError(out_dir, [f"{r.slide}: {r.error}" for r in summary.failed])
    return out_dir


def benchmark_encoder(
    features_dir: Path, labels: LabelTable, config: ReproduceConfig
) -> tuple[list[Bag], list[Evaluation]]:
    """Load one encoder's bags and evaluate every MIL model on them."""
    bags = load_bags(features_dir, labels)
    evaluations = run_models(
        bags,
        labels.n_classes,
        config.models,
        config.train,
        config.protocol,
        options_by_model=options_by_model(config.n_extreme),
    )
    return bags, evaluations


def heatmap_slide(evaluation: Evaluation) -> str:
    """The test slide to draw: the most confidently positive slide that really is positive."""
    probs = evaluation.probs if evaluation.probs.ndim == 1 else 1 - evaluation.probs[:, 0]
    positives = [i for i, label in enumerate(evaluation.labels) if label != 0] or [0]
    return evaluation.slide_ids[max(positives, key=lambda i: probs[i])]


def write_heatmaps(
    bags: Sequence[Bag],
    evaluations: Sequence[Evaluation],
    slide_paths: Mapping[str, Path],
    out_dir: Path,
    encoder: str,
    slide_id: str,
) -> list[Path]:
    """One heatmap per MIL model of ``slide_id``, scored by the models that tested it."""
    bag = next(b for b in bags if b.slide_id == slide_id)
    return [
        heatmap_for_slide(
            ev.members[slide_id],
            bag,
            slide_paths[slide_id],
            out_dir / f"{folder_name(encoder)}_{ev.model}_{slide_id}.png",
            title=f"{slide_id}: {ev.model} on {encoder} features",
        )
        for ev in evaluations
    ]


def run(config: ReproduceConfig, models: Mapping[str, nn.Module] | None = None) -> dict:
    """Embed, benchmark, and write the comparison; returns the written paths.

    ``models`` optionally maps encoder names to already loaded models (used instead of loading
    the name).
    """
    labels = read_labels(config.labels, config.class_names)
    slide_paths = find_slides(config.slides, labels)
    fetch_encoders(config.encoders, models or {})
    results, heatmaps, chosen = {}, [], None
    for encoder in config.encoders:
        features_dir = config.out / "features" / folder_name(encoder)
        source = (models or {}).get(encoder, encoder)
        log.info("embedding %d slides with %s", len(slide_paths), encoder)
        embed_encoder(list(slide_paths.values()), source, features_dir, config.embed)
        bags, evaluations = benchmark_encoder(features_dir, labels, config)
        results[encoder] = evaluations
        if config.heatmaps:
            chosen = chosen or heatmap_slide(evaluations[0])
            heatmaps += write_heatmaps(
                bags, evaluations, slide_paths, config.out / "heatmaps", encoder, chosen
            )
    paths = write_outputs(results, labels.class_names, config.out)
    return {**paths, "heatmaps": heatmaps}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training.reproduce``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print_outputs(run(parse_config(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
