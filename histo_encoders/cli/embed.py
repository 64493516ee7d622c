"""``histo-encoders embed``: slides to feature files, resumable, under torchrun too."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from histo_encoders.cli.codes import EXIT_ERROR, EXIT_OK, EXIT_SLIDES_FAILED, exit_code_help
from histo_encoders.cli.numbers import integer, number
from histo_encoders.limits import BATCH_SIZE_RANGE, MPP_RANGE, TILE_SIZE_RANGE, WORKERS_RANGE


def add_commands(commands: Any) -> None:
    """Add this module's sub-commands to the parser."""
    _add_embed(commands)


def _add_embed(commands: Any) -> None:
    p = commands.add_parser(
        "embed",
        help="embed slides into one HDF5 feature file each",
        description="Embed every tissue tile of each slide; one <stem>.h5 per slide in --out. "
        "Slides whose complete output exists with the same settings are skipped (resume). "
        "Under torchrun the slides are split between ranks.",
        epilog=exit_code_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "slides",
        nargs="+",
        help="slide files or folders, searched recursively (the --out folder and our own "
        "outputs are skipped; a folder of .dcm files is one DICOM slide)",
    )
    p.add_argument("--out", required=True, help="output folder for <stem>.h5 and the summary")
    _add_encoder_options(p, default_encoder=None)
    p.add_argument(
        "--pt-files",
        action="store_true",
        help="also write CLAM's training layout: <out>/pt_files/<stem>.pt, the (N, D) tensor",
    )
    p.add_argument("--preview", action="store_true", help="also write <stem>.preview.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_embed)


def _add_encoder_options(p: argparse.ArgumentParser, *, default_encoder: str | None) -> None:
    from histo_encoders.pipeline.options import PRECISIONS, READERS, option_default

    tissue = option_default("tissue")
    p.add_argument(
        "--encoder",
        default=default_encoder,
        help="registered name (`histo-encoders list`), hf-hub:org/name[@rev], or a local "
        "folder (ours, or any timm save_for_hf folder)"
        + (" (default: %(default)s)" if default_encoder else "; required"),
    )
    p.add_argument(
        "--mpp",
        type=number(*MPP_RANGE),
        help="target um/px of the tiles (default: the encoder's; needed for folders that "
        "do not record it)",
    )
    p.add_argument(
        "--allow-unpinned",
        action="store_true",
        help="allow a registered encoder at a revision other than its pinned commit (checked "
        "against the hash recorded at its first download)",
    )
    p.add_argument(
        "--tile-size",
        type=integer(*TILE_SIZE_RANGE),
        help="tile side in px (default: the encoder's)",
    )
    p.add_argument(
        "--slide-mpp",
        metavar="MPP_OR_CSV",
        type=_mpp_or_csv,
        help="the slides' level-0 um/px, over what the files record: one number, or a CSV "
        "with a slide and an mpp column (slide,mpp; TRIDENT's wsi,mpp and slide2vec's "
        "image_path,spacing_at_level_0 are read too)",
    )
    p.add_argument(
        "--batch-size",
        type=integer(*BATCH_SIZE_RANGE),
        default=option_default("batch_size"),
        help="tiles per batch (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=integer(*WORKERS_RANGE),
        help="OpenSlide tile reader processes (default: one per CPU, at most 8; here "
        f"{option_default('workers')})",
    )
    p.add_argument(
        "--device",
        default=option_default("device"),
        help="auto | cpu | cuda | cuda:N (default: %(default)s)",
    )
    p.add_argument(
        "--precision",
        default=option_default("precision"),
        choices=PRECISIONS,
        help="auto: bf16 on a GPU, fp32 on the CPU (default: %(default)s)",
    )
    p.add_argument(
        "--min-tissue",
        type=number(0.0, 1.0),
        default=tissue.min_tissue,
        help="tissue fraction to keep a tile (default: %(default)s)",
    )
    p.add_argument(
        "--reader",
        default=option_default("reader"),
        choices=READERS,
        help="tile reader: auto picks the TIFF reader where it applies (default: %(default)s)",
    )
    p.add_argument(
        "--cpu-decode",
        action="store_true",
        help="on CUDA, decode JPEG tiles on the CPU instead of with nvJPEG on the GPU",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    p.add_argument(
        "--no-channels-last", action="store_true", help="keep NCHW memory layout on the device"
    )


def _mpp_or_csv(text: str) -> float | str:
    """``--slide-mpp``: a number (checked against the plausible range), or the path of a CSV of
    per-slide values."""
    try:
        float(text)
    except ValueError:
        return text
    return number(*MPP_RANGE)(text)


def embed_options_from_args(args: argparse.Namespace) -> Any:
    """EmbedOptions from parsed ``embed`` arguments."""
    from histo_encoders.pipeline.options import EmbedOptions
    from histo_encoders.slides.tissue import TissueSettings

    # Options left out on the command line keep EmbedOptions' own defaults.
    chosen = {"workers": args.workers} if args.workers is not None else {}
    return EmbedOptions(
        **chosen,
        mpp=args.mpp,
        tile_size=args.tile_size,
        slide_mpp=args.slide_mpp if isinstance(args.slide_mpp, float) else None,
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
    from histo_encoders.pipeline.inputs import collect_slides, read_slide_mpps
    from histo_encoders.pipeline.run import embed_slides

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(
            f"histo-encoders embed: error: --out {out} is a file; give a folder (created if missing)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    if args.encoder is None:
        print(_encoder_required(), file=sys.stderr)
        return EXIT_ERROR
    options = embed_options_from_args(args)
    try:
        slides = collect_slides(args.slides, exclude=[args.out])
        slide_mpps = read_slide_mpps(args.slide_mpp) if isinstance(args.slide_mpp, str) else {}
    except (OSError, ValueError) as error:  # a missing input or CSV, or two same-named slides
        print(f"histo-encoders embed: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    if not slides:
        print(f"histo-encoders embed: no slide files found in {args.slides}", file=sys.stderr)
        return EXIT_ERROR
    encoder = args.encoder
    if args.allow_unpinned:
        from histo_encoders.encoders.load import load

        encoder = load(args.encoder, allow_unpinned=True)
    # Under torchrun, embed_slides splits the slides, waits for every rank and sums failures.
    summary = embed_slides(
        slides,
        encoder,
        args.out,
        options,
        preview=args.preview,
        progress=not args.no_progress,
        pt_files=args.pt_files,
        slide_mpps=slide_mpps,
    )
    print(summary.format())
    return EXIT_SLIDES_FAILED if summary.total_failed else EXIT_OK


def _encoder_required() -> str:
    from histo_encoders.encoders.registry import get_config, list_encoders

    published = [name for name in list_encoders() if get_config(name).published]
    return (
        "histo-encoders embed: error: choose an encoder with --encoder: a published one ("
        + ", ".join(published)
        + "), hf-hub:org/name, or a local encoder folder. `histo-encoders list` describes them."
    )
