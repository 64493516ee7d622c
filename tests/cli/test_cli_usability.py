"""The command line a newcomer meets: a version, help for every flag, no unpublished default."""

from __future__ import annotations

import argparse

import pytest

from histo_encoders import __version__
from histo_encoders.cli import build_parser, main
from histo_encoders.cli.encoders import LAYOUT_CHOICES


def _parsers(parser: argparse.ArgumentParser):
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {p}" if p != sub.prog else name, s) for p, s in _parsers(sub))


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and __version__ in capsys.readouterr().out


def test_every_flag_has_help_and_shows_its_choices(capsys):
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        with pytest.raises(SystemExit):
            parser.parse_args(["--help"])
        text = capsys.readouterr().out
        for action in parser._actions:
            if action.choices and not isinstance(action, argparse._SubParsersAction):
                assert "{" + ",".join(action.choices) + "}" in text, (name, action.dest)


def test_layout_choices_are_the_converter_layouts():
    from histo_encoders.encoders.convert import LAYOUTS

    assert ("auto", *LAYOUTS) == LAYOUT_CHOICES


def test_embed_without_encoder_lists_the_published_ones(tmp_path, capsys):
    code = main(["embed", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "--encoder" in err and "imagenet" in err and "lunit-mocov2" in err
    assert "moco-camelyon" not in err  # not published: never offered
