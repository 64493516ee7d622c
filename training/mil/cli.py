"""``python -m training.mil``: benchmark MIL models on one encoder's feature files.

Example::

    python -m training.mil --features features/moco-camelyon --labels camelyon16.csv \\
        --config training/configs/mil_camelyon16.yaml --out results/moco-camelyon

``--config`` sets option defaults from a YAML file (keys are the option names); options given
on the command line override it. Progress: one log line per epoch; ``results.*`` are rewritten
each time a model finishes, and finished repeats are kept in ``OUT/repeats`` so a rerun with the
same settings skips them.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from histo_encoders.errors import ConfigError

from .benchmark import print_outputs, run_models, write_outputs
from .data import load_bags, read_labels
from .models import MODELS
from .protocols import PROTOCOLS, ProtocolOptions
from .train import TrainOptions


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default in its help (unless the
    option is required, has none, or its help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        no_default = (
            default is None or default is False or default == [] or default == argparse.SUPPRESS
        ) or action.required
        if no_default or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


@dataclass(frozen=True)
class MilConfig:
    """Everything one ``python -m training.mil`` run needs."""

    features: Path
    labels: Path
    out: Path
    models: tuple[str, ...]
    protocol: ProtocolOptions
    train: TrainOptions
    encoder: str
    n_extreme: int = 5
    half: bool = False
    class_names: tuple[str, ...] | None = None
    lrs: tuple[float, ...] = ()
    weight_decays: tuple[float, ...] = ()


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared with ``training.reproduce``: models, protocol, training."""
    parser.add_argument(
        "--model",
        nargs="+",
        default=["chowder", "abmil"],
        help=f"MIL models: {', '.join(MODELS)} (deepmil = abmil)",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="official-split",
        help="official-split: the labels' train/test column; kfold; nested-cv",
    )
    parser.add_argument("--folds", type=int, default=5, help="outer folds (kfold, nested-cv)")
    parser.add_argument(
        "--inner-folds",
        type=int,
        default=None,
        help="inner folds, ensembled on test (default 1 = a validation split; 5 for nested-cv)",
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="training slides held out for validation"
    )
    parser.add_argument("--repeats", type=int, default=1, help="repeat over seeds seed..seed+n-1")
    parser.add_argument("--seed", type=int, default=0, help="first seed (splits, init, batches)")
    parser.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="models per validation split, averaged on test (Chowder's E; the paper uses 50)",
    )
    parser.add_argument("--epochs", type=int, default=100, help="most epochs per model")
    parser.add_argument(
        "--min-epochs",
        type=int,
        default=None,
        help="epochs before early stopping may stop (default: each model's own, see "
        "training/README.md)",
    )
    parser.add_argument(
        "--patience", type=int, default=10, help="epochs without improvement, after the minimum"
    )
    parser.add_argument(
        "--lr",
        type=float,
        nargs="+",
        default=[],
        help="one or more, chosen between on validation (default: a grid per model)",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        nargs="+",
        default=[],
        help="one or more; several are chosen between on validation (default: each model's own)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="slides per training step")
    parser.add_argument(
        "--bag-mode",
        choices=("padded", "one", "sample"),
        default="padded",
        help="padded: slides padded to the longest; one: a slide per step; sample: "
        "--sample-tiles random tiles per slide per step",
    )
    parser.add_argument(
        "--sample-tiles",
        type=int,
        default=512,
        help="tiles per slide per step with --bag-mode sample",
    )
    parser.add_argument(
        "--n-extreme", type=int, default=5, help="Chowder's R (5: the paper's Camelyon16 setting)"
    )
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--no-mixed-precision", action="store_true", help="fp32 on CUDA too")
    parser.add_argument("--half", action="store_true", help="cache features as float16")
    parser.add_argument(
        "--classes",
        nargs="+",
        default=None,
        help="class names in order (binary: negative then positive)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training.mil`` parser."""
    parser = argparse.ArgumentParser(
        prog="python -m training.mil",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--features",
        type=Path,
        required=True,
        help="folder of <slide_id>.h5 (or .pt) feature files of one encoder: written by "
        "histo-encoders embed, CLAM (h5_files/, pt_files/) or TRIDENT (features_<encoder>/)",
    )
    parser.add_argument(
        "--labels", type=Path, required=True, help="CSV: slide_id,label[,patient_id][,split]"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results"), help="folder for results.json/.md, roc.png"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML of option defaults (e.g. training/configs/mil_camelyon16.yaml)",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="column name in the table (default: the features folder's name)",
    )
    add_benchmark_arguments(parser)
    return parser


def protocol_options(args: argparse.Namespace) -> ProtocolOptions:
    """Protocol options from parsed arguments."""
    inner = args.inner_folds or (5 if args.protocol == "nested-cv" else 1)
    out = getattr(args, "out", None)
    return ProtocolOptions(
        args.protocol,
        args.folds,
        inner,
        args.val_fraction,
        args.repeats,
        args.seed,
        ensemble=args.ensemble,
        # Finished repeats are kept under the output folder; a rerun skips them.
        results_dir=Path(out) / "repeats" if out is not None else None,
    )


def train_options(args: argparse.Namespace) -> TrainOptions:
    """Training options (shared by every model) from parsed arguments."""
    return TrainOptions(
        model=args.model[0],
        epochs=args.epochs,
        min_epochs=args.min_epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        bag_mode=args.bag_mode,
        sample_tiles=args.sample_tiles,
        device=args.device,
        mixed_precision=not args.no_mixed_precision,
    )


def read_option_file(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Option defaults from a YAML mapping of option names (``n-extreme`` or ``n_extreme``).

    Raises:
        ConfigError: the file cannot be read, is not a mapping, or names an unknown option.
    """
    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"Cannot read MIL config {path}: {err}.") from err
    if not isinstance(values, dict):
        raise ConfigError(f"MIL config {path} must be a mapping of option names to values.")
    known = {action.dest for action in parser._actions} - {"help", "config"}
    options = {str(key).replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"MIL config {path} sets unknown option(s) {unknown}; known: {sorted(known)}."
        )
    return options


def parse_config(argv: Sequence[str] | None = None) -> MilConfig:
    """Parse the command line (and its ``--config`` file) into a frozen :class:`MilConfig`.

    Raises:
        ConfigError: the ``--config`` file is unreadable or sets an unknown option.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        parser.set_defaults(**read_option_file(args.config, parser))
        args = parser.parse_args(argv)
    return MilConfig(
        features=args.features,
        labels=args.labels,
        out=args.out,
        models=tuple(args.model),
        protocol=protocol_options(args),
        train=train_options(args),
        encoder=args.encoder or args.features.name,
        n_extreme=args.n_extreme,
        half=args.half,
        class_names=tuple(args.classes) if args.classes else None,
        lrs=tuple(args.lr),
        weight_decays=tuple(args.weight_decay),
    )


def options_by_model(n_extreme: int) -> dict[str, tuple]:
    """Per-model constructor options the command line exposes."""
    return {"chowder": (("n_extreme", n_extreme),)}


def run(config: MilConfig) -> dict:
    """Load bags, evaluate every model, write results; returns the written paths."""
    labels = read_labels(config.labels, config.class_names)
    bags = load_bags(config.features, labels, half=config.half)

    def write(evaluations: list) -> dict:
        return write_outputs({config.encoder: evaluations}, labels.class_names, config.out)

    evaluations = run_models(
        bags,
        labels.n_classes,
        config.models,
        config.train,
        config.protocol,
        lrs=config.lrs,
        weight_decays=config.weight_decays,
        options_by_model=options_by_model(config.n_extreme),
        on_result=write,
    )
    return write(evaluations)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training.mil``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print_outputs(run(parse_config(argv)))
    return 0
