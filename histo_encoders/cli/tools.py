"""``histo-encoders demo`` and ``benchmark``: the pipeline shown end to end, and timed."""

from __future__ import annotations

import argparse
from typing import Any

from histo_encoders.cli.codes import EXIT_OK, EXIT_SLIDES_FAILED
from histo_encoders.cli.numbers import integer, number
from histo_encoders.limits import BATCH_SIZE_RANGE, MPP_RANGE, TILE_SIZE_RANGE


def add_commands(commands: Any) -> None:
    """Add this module's sub-commands to the parser."""
    _add_demo(commands)
    _add_benchmark(commands)


def _add_demo(commands: Any) -> None:
    p = commands.add_parser(
        "demo",
        help="embed a synthetic slide end to end (untrained demo encoder by default)",
        description="Writes a small synthetic slide, embeds it and shows where the output is. "
        "Without --encoder it uses an UNTRAINED demo encoder: its features are meaningless.",
    )
    p.add_argument("--out", default="histo-encoders-demo", help="folder (default: %(default)s)")
    p.add_argument("--encoder", help="a real encoder to use instead of the untrained demo one")
    p.add_argument(
        "--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)"
    )
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from histo_encoders.tools.demo import run_demo

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
    p.add_argument(
        "--mpp", type=number(*MPP_RANGE), default=0.5, help="target um/px (default: 0.5)"
    )
    p.add_argument(
        "--tile-size",
        type=integer(*TILE_SIZE_RANGE),
        default=224,
        help="tile side in px (default: 224)",
    )
    p.add_argument(
        "--batch-size",
        type=integer(*BATCH_SIZE_RANGE),
        default=64,
        help="tiles per batch (default: 64)",
    )
    p.add_argument("--max-tiles", type=integer(1), help="only the first N tiles of the grid")
    p.add_argument(
        "--model-tiles", type=integer(1), default=256, help="tiles for the model columns"
    )
    p.add_argument(
        "--repeats", type=integer(1, 1000), default=3, help="runs per measurement (best shown)"
    )
    p.add_argument(
        "--threads", type=integer(0, 1024), default=0, help="TIFF reader threads (0: all CPUs)"
    )
    p.add_argument(
        "--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)"
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="auto: bf16 on a GPU, fp32 on the CPU (default: %(default)s)",
    )
    p.add_argument("--json", help="also write the full result to this JSON file")
    p.set_defaults(handler=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    import json

    from histo_encoders.tools.benchmark import BenchmarkOptions, format_report, run_benchmark

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
            json.dump(result.as_dict(), handle, indent=2, default=str)
    return EXIT_OK
