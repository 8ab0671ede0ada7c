"""Every option and argument of every console script (pyproject.toml [project.scripts]), and of every
sub-command and benchmark below them, has help text."""

from __future__ import annotations

import argparse

import pytest

from tests.cli_parsers import SCRIPTS, script_parsers, walk


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_option_has_help(script: str) -> None:
    bare = []
    for prog, parser in script_parsers(script).items():
        for command, sub in walk(prog, parser):
            for action in sub._actions:
                if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                    continue
                if action.help == argparse.SUPPRESS:
                    continue
                if not (action.help or "").strip():
                    bare.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
    assert bare == [], f"options without help: {bare}"


def test_sub_commands_have_help() -> None:
    bare = []
    for script in SCRIPTS:
        for prog, parser in script_parsers(script).items():
            for _, sub in walk(prog, parser):
                for action in sub._actions:
                    if isinstance(action, argparse._SubParsersAction):
                        helped = {choice.dest for choice in action._choices_actions if choice.help}
                        bare += [f"{prog} {name}" for name in action.choices if name not in helped]
    assert bare == [], f"sub-commands without help: {bare}"
