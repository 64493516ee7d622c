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
    p = commands.add_parser("list", help="list registered encoders")
    p.set_defaults(handler=_run_list)


def _run_list(args: argparse.Namespace) -> int:
    from histo_encoders.encoders.registry import get_config, list_encoders

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

    from histo_encoders.encoders.registry import get_config

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
    from histo_encoders.encoders.publish import publish_checkpoint, push_to_hub

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
    from histo_encoders.encoders.convert import convert_checkpoint
    from histo_encoders.encoders.registry import get_config

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
