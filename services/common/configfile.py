"""Reading a configuration file: its errors name the file, whatever the format's parser says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def read_text(path: Path, error: type[ValueError]) -> str:
    """The file's text; unreadable or not UTF-8 is `error`, naming the file."""
    try:
        return path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text: {exc}") from None


def load_config(path: Path, parse: Callable[[str], T], error: type[ValueError]) -> T:
    """`parse` the file's text; an unreadable file, or `error` from the parser, becomes `error`
    with the path in front."""
    text = read_text(path, error)
    try:
        return parse(text)
    except error as exc:
        raise error(f"{path}: {exc}") from None
