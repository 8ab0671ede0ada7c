"""README.md and docs/ stay true: every `make <target>` they name exists in the Makefile, and every CLI
command and sub-command they name (the console scripts of pyproject.toml, ``python -m benchmarks <name>``)
exists and answers ``--help`` with exit 0 (in-process, through the scripts' own parsers)."""

from __future__ import annotations

import re

import pytest

from tests.cli_parsers import (
    BENCH,
    ROOT,
    SCRIPTS,
    benchmark_names,
    script_main,
    script_parsers,
    subcommands,
)

README = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
MAKEFILE = (ROOT / "Makefile").read_text()


def _code() -> list[str]:
    """The README's code: fenced blocks and inline code spans."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", README, flags=re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", README, flags=re.S | re.M)
    return blocks + re.findall(r"`([^`\n]+)`", prose)


def make_targets_named() -> set[str]:
    return {m for code in _code() for m in re.findall(r"(?:^|[\s;&(])make ([A-Za-z0-9_.-]+)", code, re.M)}


def commands_named() -> set[tuple[str, str | None]]:
    """(script, first word after it unless an option or a placeholder) for every command in the README."""
    names = "|".join(re.escape(s) for s in sorted(SCRIPTS, key=len, reverse=True))
    pattern = rf"(?<![\w/.-])({names}|python -m benchmarks)(?![\w.-])(?:[ \t]+([a-z][a-z0-9_-]*))?"
    found = set()
    for code in _code():
        for script, word in re.findall(pattern, code):
            found.add((BENCH if script == "python -m benchmarks" else script, word or None))
    return found


def test_readme_names_make_targets_and_commands() -> None:
    assert {"demo", "test"} <= make_targets_named()
    assert ("profilerec-data", "import") in commands_named()


@pytest.mark.parametrize("target", sorted(make_targets_named()))
def test_make_target_exists(target: str) -> None:
    assert re.search(rf"^{re.escape(target)}\s*:", MAKEFILE, re.M), f"README names `make {target}`"


@pytest.mark.parametrize(
    ("script", "word"), sorted(commands_named(), key=lambda c: (c[0], c[1] or "")), ids=str
)
def test_command_answers_help(script: str, word: str | None) -> None:
    if script == BENCH and word is None:  # the bare runner prints its usage with the benchmark names
        with pytest.raises(SystemExit) as info:
            script_main(BENCH)(["--help"])
        assert info.value.code == 0
        return
    if script == BENCH:
        assert word in benchmark_names(), f"README names benchmark {word!r}"
        parser = script_parsers(BENCH)[f"{BENCH} {word}"]
        argv = ["--help"]
    else:
        parser = script_parsers(script)[script]
        subs = subcommands(parser)
        if subs and word is not None:
            assert word in subs, f"README names `{script} {word}`; sub-commands: {sorted(subs)}"
            argv = [word, "--help"]
        else:
            argv = ["--help"]
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 0
