"""The table of encoders: one frozen record per set of weights, one name each.

A record says everything a pipeline needs to use the weights correctly: where they live (hub id
pinned to a commit, sha256 of the file), which timm architecture they fit, and the conditions
they were trained under (microns per pixel, tile size, normalization). Names are resolved here and
nowhere else; aliases point at a record, never at a copy of one.
"""

from __future__ import annotations

import difflib

from histo_encoders.encoders.config import EncoderConfig
from histo_encoders.encoders.records import RECORDS
from histo_encoders.errors import UnknownEncoderError

_TABLE: dict[str, EncoderConfig] = {}
_ALIASES: dict[str, str] = {}


def register_encoder(config: EncoderConfig, *, overwrite: bool = False) -> EncoderConfig:
    """Add ``config`` to the table (e.g. a private encoder) and return it.

    Raises ValueError if the name or an alias is taken, unless ``overwrite``.
    """
    taken = [n for n in (config.name, *config.aliases) if n in _TABLE or n in _ALIASES]
    if taken and not overwrite:
        raise ValueError(f"encoder name(s) {taken} already registered; pass overwrite=True")
    if overwrite:
        unregister_encoder(config.name, missing_ok=True)
    _TABLE[config.name] = config
    for alias in config.aliases:
        _ALIASES[alias] = config.name
    return config


def unregister_encoder(name: str, *, missing_ok: bool = False) -> None:
    """Remove a record and its aliases from the table."""
    config = _TABLE.pop(name, None)
    if config is None:
        if missing_ok:
            return
        raise UnknownEncoderError(name, suggest(name))
    for alias in config.aliases:
        _ALIASES.pop(alias, None)


def is_registered(name: str) -> bool:
    """True for a registered name or alias."""
    return name in _TABLE or name in _ALIASES


def get_config(name: str) -> EncoderConfig:
    """Return the record of a registered encoder, by name or alias.

    Raises UnknownEncoderError (a KeyError) with close matches when there is none.
    """
    canonical = _ALIASES.get(name, name)
    try:
        return _TABLE[canonical]
    except KeyError as error:
        raise UnknownEncoderError(name, suggest(name)) from error


def list_encoders() -> dict[str, str]:
    """Every registered encoder name mapped to its one-line description, in table order."""
    return {name: config.description for name, config in _TABLE.items()}


def suggest(name: str, limit: int = 3) -> list[str]:
    """Registered names and aliases close to ``name``."""
    candidates = [*_TABLE, *_ALIASES]
    return difflib.get_close_matches(name, candidates, n=limit, cutoff=0.5)


for _record in RECORDS:
    register_encoder(_record)
