"""The ``histo-encoders`` command line (also ``python -m histo_encoders``).

The parser is built in a function and each sub-command turns its arguments into typed options
before calling the library; heavy modules (torch, OpenSlide, timm) are imported inside the
handlers so ``histo-encoders --help`` answers at once. Errors histo-encoders raises on purpose
are printed as one clear line (exit code 2); ``embed`` exits 1 when any slide failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK = 0
EXIT_SLIDES_FAILED = 1
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, sub-commands included."""
    parser = argparse.ArgumentParser(
        prog="histo-encoders",
        description="Histology tile encoders and whole-slide embedding.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_embed(commands)
    _add_demo(commands)
    _add_benchmark(commands)
    _add_list(commands)
    _add_info(commands)
    _add_fetch(commands)
    _add_publish(commands)
    _add_convert(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 some slides failed, 2 error)."""
    args = build_parser().parse_args(argv)
    from histo_encoders.errors import HistoEncodersError

    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except HistoEncodersError as error:
        # Our errors already say what to do: a traceback would only bury the message.
        print(f"histo-encoders {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR


# --- embed --------------------------------------------------------------------------------


def _add_embed(commands: Any) -> None:
    p = commands.add_parser(
        "embed",
        help="embed slides into one HDF5 feature file each",
        description="Embed every tissue tile of each slide; one <stem>.h5 per slide in --out. "
        "Slides whose complete output exists with the same settings are skipped (resume). "
        "Under torchrun the slides are split between ranks.",
    )
    p.add_argument("slides", nargs="+", help="slide files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder for <stem>.h5 and the summary")
    _add_encoder_options(p, default_encoder="moco-camelyon")
    p.add_argument("--preview", action="store_true", help="also write <stem>.preview.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_embed)


def _add_encoder_options(p: argparse.ArgumentParser, *, default_encoder: str | None) -> None:
    p.add_argument(
        "--encoder",
        default=default_encoder,
        help="registered name, hf-hub:org/name[@rev] or local folder (default: %(default)s)",
    )
    p.add_argument("--mpp", type=float, help="target um/px of the tiles (default: the encoder's)")
    p.add_argument("--tile-size", type=int, help="tile side in px (default: the encoder's)")
    p.add_argument("--slide-mpp", type=float, help="override the slide's own level-0 um/px")
    p.add_argument("--batch-size", type=int, default=64, help="tiles per batch (default: 64)")
    p.add_argument(
        "--workers", type=int, help="OpenSlide tile reader processes (default: CPUs, at most 8)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument(
        "--min-tissue", type=float, default=0.6, help="tissue fraction to keep a tile (0.6)"
    )
    p.add_argument("--reader", default="auto", help="tile reader: auto | openslide | tiff")
    p.add_argument(
        "--cpu-decode",
        action="store_true",
        help="on CUDA, decode JPEG tiles on the CPU instead of with nvJPEG on the GPU",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    p.add_argument(
        "--no-channels-last", action="store_true", help="keep NCHW memory layout on the device"
    )


def embed_options_from_args(args: argparse.Namespace) -> Any:
    """EmbedOptions from parsed ``embed`` arguments."""
    from histo_encoders.embed import EmbedOptions
    from histo_encoders.tissue import TissueSettings

    # Options left out on the command line keep EmbedOptions' own defaults.
    chosen = {"workers": args.workers} if args.workers is not None else {}
    return EmbedOptions(
        **chosen,
        mpp=args.mpp,
        tile_size=args.tile_size,
        slide_mpp=args.slide_mpp,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        channels_last=not args.no_channels_last,
        compile=args.compile,
        tissue=TissueSettings(min_tissue=args.min_tissue),
        reader=args.reader,
        gpu_decode=not args.cpu_decode,
    )


def _run_embed(args: argparse.Namespace) -> int:
    from histo_encoders.batch import collect_slides, embed_slides
    from histo_encoders.distributed import join_ranks, leave_ranks, rank_info, total_over_ranks

    options = embed_options_from_args(args)
    try:
        slides = collect_slides(args.slides)
    except (FileNotFoundError, ValueError) as error:  # a missing input, or two same-named slides
        print(f"histo-encoders embed: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    if not slides:
        print(f"histo-encoders embed: no slide files found in {args.slides}", file=sys.stderr)
        return EXIT_ERROR
    ranks = rank_info()
    created = join_ranks(ranks)
    try:
        summary = embed_slides(
            slides,
            args.encoder,
            args.out,
            options,
            rank=ranks.rank,
            world_size=ranks.world_size,
            local_rank=ranks.local_rank,
            preview=args.preview,
            progress=not args.no_progress,
        )
        print(summary.format())
        # Every rank waits here for the others, then all exit with the same status.
        failed = total_over_ranks(len(summary.failed))
    finally:
        leave_ranks(created)
    return EXIT_SLIDES_FAILED if failed else EXIT_OK


# --- demo and benchmark ----------------------------------------------------------------------


def _add_demo(commands: Any) -> None:
    p = commands.add_parser(
        "demo",
        help="embed a synthetic slide end to end (untrained demo encoder by default)",
        description="Writes a small synthetic slide, embeds it and shows where the output is. "
        "Without --encoder it uses an UNTRAINED demo encoder: its features are meaningless.",
    )
    p.add_argument("--out", default="histo-encoders-demo", help="folder (default: %(default)s)")
    p.add_argument("--encoder", help="a real encoder to use instead of the untrained demo one")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from histo_encoders.demo import run_demo

    result = run_demo(args.out, encoder=args.encoder, device=args.device)
    print(result.report())
    return EXIT_OK if result.ok else EXIT_SLIDES_FAILED


def _add_benchmark(commands: Any) -> None:
    p = commands.add_parser(
        "benchmark",
        help="tile supply, model-only and end-to-end throughput (tiles/s)",
        description="Times the tile readers alone, the encoder alone on tiles already in memory, "
        "and the whole pipeline (reading + model) on the same tiles; prints them side by side. "
        "Without --encoder only tile supply is measured.",
    )
    p.add_argument("--slide", help="slide to read (default: a synthetic 9000 x 7000 px SVS)")
    p.add_argument("--encoder", help="encoder name, hf-hub id or folder for the model columns")
    p.add_argument("--mpp", type=float, default=0.5, help="target um/px (default: 0.5)")
    p.add_argument("--tile-size", type=int, default=224, help="tile side in px (default: 224)")
    p.add_argument("--batch-size", type=int, default=64, help="tiles per batch (default: 64)")
    p.add_argument("--max-tiles", type=int, help="only the first N tiles of the grid")
    p.add_argument("--model-tiles", type=int, default=256, help="tiles for the model columns")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement (best shown)")
    p.add_argument("--threads", type=int, default=0, help="TIFF reader threads (0: all CPUs)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--json", help="also write the full result to this JSON file")
    p.set_defaults(handler=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    import json

    from histo_encoders.benchmark import BenchmarkOptions, format_report, run_benchmark

    options = BenchmarkOptions(
        target_mpp=args.mpp,
        tile_size=args.tile_size,
        batch_size=args.batch_size,
        threads=args.threads,
        repeats=args.repeats,
        max_tiles=args.max_tiles,
        model_tiles=args.model_tiles,
        device=args.device,
        precision=args.precision,
    )
    result = run_benchmark(args.slide, model=args.encoder, options=options)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=str)
    return EXIT_OK


# --- encoders: list, info, fetch, publish, convert -------------------------------------------


def _add_list(commands: Any) -> None:
    p = commands.add_parser("list", help="list registered encoders")
    p.set_defaults(handler=_run_list)


def _run_list(args: argparse.Namespace) -> int:
    from histo_encoders.registry import get_config, list_encoders

    for name, description in list_encoders().items():
        config = get_config(name)
        state = "" if config.published else "  [not published yet]"
        print(f"{name:<16} {config.architecture:<12} {config.mpp} um/px{state}\n    {description}")
    return EXIT_OK


def _add_info(commands: Any) -> None:
    p = commands.add_parser("info", help="show everything recorded about an encoder")
    p.add_argument("name")
    p.set_defaults(handler=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from histo_encoders.registry import get_config

    config = get_config(args.name)
    for field in fields(config):
        value = getattr(config, field.name)
        # model_args is a read-only mapping proxy: show it as the dict it reads as.
        shown = dict(value) if field.name == "model_args" else value
        print(f"{field.name:<14} {shown}")
    return EXIT_OK


def _add_fetch(commands: Any) -> None:
    p = commands.add_parser("fetch", help="download and verify an encoder's weights into the cache")
    p.add_argument("name")
    p.add_argument("--revision", help="hub commit to fetch instead of the pinned one")
    p.set_defaults(handler=_run_fetch)


def _run_fetch(args: argparse.Namespace) -> int:
    from histo_encoders.build import fetch

    fetched = fetch(args.name, revision=args.revision)
    print(f"{fetched.config.name}: {fetched.weights_path}")
    for key, value in fetched.provenance.items():
        print(f"  {key}: {value}")
    return EXIT_OK


def _add_publish(commands: Any) -> None:
    p = commands.add_parser(
        "publish", help="export a training checkpoint as an encoder folder (and push it)"
    )
    p.add_argument("src", help="checkpoint written by training/")
    p.add_argument("--name", required=True, help="encoder name")
    p.add_argument("--out", required=True, help="encoder folder to write")
    p.add_argument("--push", metavar="ORG/REPO", help="also upload the folder to the hub")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(handler=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    from histo_encoders.publish import publish_checkpoint, push_to_hub

    folder = publish_checkpoint(args.src, args.out, name=args.name, overwrite=args.overwrite)
    print(f"encoder folder: {folder}")
    if args.push:
        commit = push_to_hub(folder, args.push)
        print(f"pushed to hf-hub:{args.push}@{commit}: pin this revision in the registry")
    return EXIT_OK


def _add_convert(commands: Any) -> None:
    p = commands.add_parser(
        "convert", help="convert a foreign checkpoint (MoCo, torchvision, Lightning) to a folder"
    )
    p.add_argument("src", help="checkpoint file")
    p.add_argument("--out", required=True, help="encoder folder to write")
    p.add_argument("--name", required=True, help="encoder name (a registered one, or see --like)")
    p.add_argument(
        "--like", help="registered encoder whose architecture/mpp/normalization --name shares"
    )
    p.add_argument("--layout", default="auto", help="checkpoint layout (default: detect)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from histo_encoders.convert import convert_checkpoint
    from histo_encoders.registry import get_config

    if args.like:
        config = get_config(args.like).with_updates(
            name=args.name, aliases=(), hub_id=None, revision=None, sha256=None, published=True
        )
    else:
        config = get_config(args.name)
    folder = convert_checkpoint(
        args.src, args.out, config, layout=args.layout, overwrite=args.overwrite
    )
    print(f"encoder folder: {folder}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
