"""``histo-encoders list | info | fetch | publish | convert``: the encoders and their weights."""

from __future__ import annotations

import argparse
from typing import Any

from histo_encoders.cli.codes import EXIT_OK


def add_commands(commands: Any) -> None:
    """Add this module's sub-commands to the parser."""
    _add_list(commands)
    _add_info(commands)
    _add_fetch(commands)
    _add_publish(commands)
    _add_convert(commands)


def _add_list(commands: Any) -> None:
    p = commands.add_parser(
        "list", help="list registered encoders: architecture, embedding, tiles, licence, pins"
    )
    p.set_defaults(handler=_run_list)


_LIST_COLUMNS = ("name", "architecture", "dim", "tile", "mpp", "licence", "gated", "weights pin")


def _run_list(args: argparse.Namespace) -> int:
    from histo_encoders.encoders.registry import get_config, list_encoders

    rows = [_LIST_COLUMNS]
    descriptions = []
    for name, description in list_encoders().items():
        config = get_config(name)
        rows.append(
            (
                name,
                config.architecture,
                str(config.num_features),
                str(config.tile_size),
                "-" if config.mpp is None else f"{config.mpp:g}",
                config.license,
                "yes" if config.gated else "no",
                _pin_state(config),
            )
        )
        descriptions.append(description)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_LIST_COLUMNS))]
    for index, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if index:
            print(f"    {descriptions[index - 1]}")
    print(
        "\nweights pin: 'commit+sha256' = pinned commit and file hash; 'commit' = pinned commit, "
        "hash recorded at first download; 'UNPINNED' = loads main, hash recorded at first "
        "download of each commit. Gated: request access on the hub, then set HF_TOKEN."
    )
    return EXIT_OK


def _pin_state(config: Any) -> str:
    if not config.published:
        return "not published yet"
    return {"unpinned": "UNPINNED"}.get(config.pinned, config.pinned)


def _add_info(commands: Any) -> None:
    p = commands.add_parser("info", help="show everything recorded about an encoder")
    p.add_argument("name", help="registered encoder name or alias")
    p.set_defaults(handler=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from histo_encoders.encoders.pooling import get_rule
    from histo_encoders.encoders.registry import get_config

    config = get_config(args.name)
    for field in fields(config):
        if field.name in ("citation", "sources", "notes"):
            continue
        value = getattr(config, field.name)
        # model_args is a read-only mapping proxy: show it as the dict it reads as.
        shown = dict(value) if field.name == "model_args" else value
        print(f"{field.name:<14} {shown}")
    print(f"{'embedding':<14} {get_rule(config.pooling).description}")
    print(f"{'weights pin':<14} {_pin_state(config)}")
    if config.hub_id:
        gate = "gated: request access at " if config.gated else "not gated: "
        print(f"{'access':<14} {gate}https://huggingface.co/{config.hub_id}")
    if config.notes:
        print(f"\nnotes:\n  {config.notes}")
    if config.sources:
        print("\nsources:")
        for source in config.sources:
            print(f"  - {source}")
    print(f"\ncitation:\n  {config.citation or 'none given'}")
    return EXIT_OK


def _add_fetch(commands: Any) -> None:
    p = commands.add_parser("fetch", help="download and verify an encoder's weights into the cache")
    p.add_argument("name", help="registered encoder name or alias, or hf-hub:org/name")
    p.add_argument("--revision", help="hub revision (commit, branch or tag) to fetch")
    p.add_argument(
        "--allow-unpinned",
        action="store_true",
        help="allow a registered encoder at a commit other than its pinned one (checked against "
        "the hash recorded at its first download)",
    )
    p.set_defaults(handler=_run_fetch)


def _run_fetch(args: argparse.Namespace) -> int:
    from histo_encoders.encoders.load import fetch

    fetched = fetch(args.name, revision=args.revision, allow_unpinned=args.allow_unpinned)
    print(f"{fetched.config.name}: {fetched.weights_path}")
    for key, value in fetched.provenance.as_dict().items():
        print(f"  {key}: {value}")
    return EXIT_OK


# `convert --layout` choices; the convert tests check they are encoders.convert.LAYOUTS (that
# module loads torch, and `--help` must not).
LAYOUT_CHOICES = ("auto", "moco", "moco-v3", "lightning", "torchvision")


def _add_card_options(p: argparse.ArgumentParser) -> None:
    """What the model card says that the weights cannot; never borrowed from another record."""
    p.add_argument(
        "--license",
        help="licence of the weights: a hub id (apache-2.0, cc-by-nc-4.0, ...) or a name "
        "(written as `other`); default: unknown, and the card says so",
    )
    p.add_argument("--description", help="one paragraph for the model card")
    p.add_argument(
        "--training-data",
        help="what the weights were trained on (default: unknown, and the card says so)",
    )
    p.add_argument("--citation", help="how to cite the weights (default: none given)")
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="HUB_DATASET_ID",
        help="hub dataset id of the training data, for the card's `datasets` (repeatable)",
    )


def _card_text(args: argparse.Namespace) -> Any:
    from histo_encoders.encoders.publish import CardText

    return CardText(
        license=args.license,
        description=args.description,
        training_data=args.training_data,
        citation=args.citation,
        datasets=tuple(args.dataset),
    )


def _add_publish(commands: Any) -> None:
    p = commands.add_parser(
        "publish",
        help="export a training checkpoint as an encoder folder (and push it)",
        description="Write an encoder folder (config.json, model.safetensors, model card) from "
        "a checkpoint written by training/. Licence, description, training data and citation "
        "come from the flags, else from the checkpoint, else the card says they are unknown.",
    )
    p.add_argument("src", help="checkpoint written by training/")
    p.add_argument("--name", required=True, help="encoder name")
    p.add_argument("--out", required=True, help="encoder folder to write")
    p.add_argument("--push", metavar="ORG/REPO", help="also upload the folder to the hub")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    _add_card_options(p)
    p.set_defaults(handler=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    from histo_encoders.encoders.publish import publish_checkpoint, push_to_hub

    folder = publish_checkpoint(
        args.src,
        args.out,
        name=args.name,
        overwrite=args.overwrite,
        card=_card_text(args),
        hub_id=args.push,
    )
    print(f"encoder folder: {folder}")
    if args.push:
        commit = push_to_hub(folder, args.push)
        print(f"pushed to hf-hub:{args.push}@{commit}: pin this revision in the registry")
    return EXIT_OK


def _add_convert(commands: Any) -> None:
    p = commands.add_parser(
        "convert",
        help="convert a foreign checkpoint (MoCo, torchvision, Lightning) to a folder",
        description="Convert a checkpoint to an encoder folder. With --like, the new encoder "
        "shares a registered one's architecture, tile resolution and normalization, and "
        "nothing else: its licence, description, training data and citation come from the "
        "flags, or the card says they are unknown.",
    )
    p.add_argument("src", help="checkpoint file")
    p.add_argument("--out", required=True, help="encoder folder to write")
    p.add_argument("--name", required=True, help="encoder name (a registered one, or see --like)")
    p.add_argument(
        "--like", help="registered encoder whose architecture/mpp/normalization --name shares"
    )
    p.add_argument(
        "--layout",
        default="auto",
        choices=LAYOUT_CHOICES,
        help="checkpoint layout: moco (facebookresearch/moco v1/v2), moco-v3, lightning "
        "(solo-learn, lightly), torchvision (plain ResNet keys, Lunit); auto detects it "
        "(default: %(default)s)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    _add_card_options(p)
    p.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from histo_encoders.encoders.convert import convert_checkpoint
    from histo_encoders.encoders.publish import config_like
    from histo_encoders.encoders.registry import get_config

    card = _card_text(args)
    if args.like:
        config = config_like(args.like, args.name, card=card)
    else:
        # The record's own weights: its texts hold, except a "not yet published" description.
        config = get_config(args.name)
        if not config.published and card.description is None:
            card = replace(
                card, description=f"{config.name}: {config.ssl_method} {config.architecture}."
            )
        given = {k: v for k, v in vars(card).items() if v not in (None, ())}
        config = config.with_updates(published=True, **given)
    folder = convert_checkpoint(
        args.src, args.out, config, layout=args.layout, overwrite=args.overwrite
    )
    print(f"encoder folder: {folder}")
    return EXIT_OK
