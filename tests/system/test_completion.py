"""Shell completion (contrib/completion): bash offers what ``tunnel``'s parser accepts.

The expected words come from :func:`tunnel.cli.main.build_parser`, so a subcommand or an
option added to the command line without its completion fails here.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest

from tunnel.cli.main import LOG_LEVELS, build_parser

from .conftest import REPO

pytestmark = pytest.mark.timeout(60)

COMPLETION = REPO / "contrib" / "completion"
BASH = COMPLETION / "tunnel.bash"
ZSH = COMPLETION / "_tunnel"


def subparsers() -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser, by name."""
    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    """The ``--long`` option strings of ``parser``."""
    return {s for action in parser._actions for s in action.option_strings if s.startswith("--")}


def bash_complete(*words: str) -> list[str]:
    """What the bash completion offers for ``words`` (the last one is being completed)."""
    bash = shutil.which("bash")
    assert bash is not None, "bash is needed to run the completion function"
    line = " ".join(["tunnel", *words])
    script = (
        f"source {BASH}\n"
        f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n"
        f"COMP_WORDS=(tunnel {' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words)}\n"
        "_tunnel\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [word for word in result.stdout.splitlines() if word]


def test_bash_offers_every_subcommand() -> None:
    assert sorted(bash_complete("")) == sorted(subparsers())
    assert bash_complete("ch") == ["check"]
    assert set(bash_complete("--")) == {"--help", "--version"}


@pytest.mark.parametrize("command", sorted(subparsers()))
def test_bash_offers_every_option_of_a_subcommand(command: str) -> None:
    assert set(bash_complete(command, "--")) == long_options(subparsers()[command])


def test_bash_completes_values() -> None:
    assert sorted(bash_complete("run", "--log-level", "")) == sorted(LOG_LEVELS)
    assert bash_complete("run", "-c", str(BASH)[:-2]) == [str(BASH)]
    assert bash_complete("status", "--admin", "") == []
    # The words after the subcommand do not change which one it is.
    assert "--pid" in bash_complete("reload", "-c", "x.ini", "--")


def test_zsh_names_every_subcommand_and_option() -> None:
    text = ZSH.read_text()
    assert text.startswith("#compdef tunnel\n")
    for command, parser in subparsers().items():
        assert f"'{command}:" in text, f"zsh: no description for {command}"
        assert f"        {command})\n" in text, f"zsh: no options for {command}"
        for option in long_options(parser) - {"--help"}:
            assert option in text, f"zsh: {command} {option} is missing"


def test_zsh_script_parses() -> None:
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (CI installs it)")
    result = subprocess.run([zsh, "-n", str(ZSH)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
