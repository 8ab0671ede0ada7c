"""The argparse parsers of every console script in pyproject.toml, without running the commands: each
script's ``main`` is called with ``ArgumentParser.parse_args`` replaced by a hook that hands back the
parser instead of parsing (so nothing a command does after parsing runs)."""

from __future__ import annotations

import argparse
import importlib
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
BENCH = "profilerec-bench"


class _ParserCapturedError(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def script_main(script: str) -> Callable[..., Any]:
    module, func = SCRIPTS[script].split(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def captured_parser(main: Callable[..., Any], argv: list[str]) -> argparse.ArgumentParser:
    def grab(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _ParserCapturedError(self)

    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", grab),
        mock.patch.object(argparse.ArgumentParser, "parse_known_args", grab),
    ):
        try:
            main(argv)
        except _ParserCapturedError as captured:
            return captured.parser
    raise AssertionError(f"{main.__module__}.main({argv}) returned without parsing its arguments")


def benchmark_names() -> list[str]:
    from benchmarks.__main__ import BENCHMARKS

    return sorted(BENCHMARKS)


def script_parsers(script: str) -> dict[str, argparse.ArgumentParser]:
    """``{command line: parser}``: one for the script, or (``profilerec-bench``) one per benchmark."""
    main = script_main(script)
    if script == BENCH:
        return {f"{script} {name}": captured_parser(main, [name]) for name in benchmark_names()}
    return {script: captured_parser(main, [])}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def walk(prog: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and every sub-parser below it, each with its command line."""
    yield prog, parser
    for name, sub in subcommands(parser).items():
        yield from walk(f"{prog} {name}", sub)
