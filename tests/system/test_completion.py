"""Shell completion (contrib/completion): bash and zsh offer what ``tunnel``'s parser accepts.

The expected words come from :func:`tunnel.cli.main.build_parser`, so a subcommand or an
option added to the command line without its completion fails here.
"""

from __future__ import annotations

import argparse
import re
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


def zsh_complete(*lines: str) -> list[str]:
    """What zsh lists after TAB on each of ``lines``, in an interactive zsh on a pty.

    Each TAB is followed by clearing the line and printing a numbered marker; the output
    is read up to that marker and the prompt after it (rendered "QQ> ", typed differently),
    so no read guesses how long to wait and no input arrives before the line editor runs.
    """
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (CI installs it)")
    script = [
        "zmodload zsh/zpty",
        "zpty z 'zsh -f -i'",
        f'zpty -w z \'PS1="Q%(?.Q.Q)> "; fpath=({COMPLETION} $fpath); autoload -U compinit; '
        'compinit -u -D; unsetopt beep; LISTMAX=0; print RE""ADY\'',
        "zpty -r -m z out '*READY*QQ> *'",
    ]
    for n, line in enumerate(lines, 1):
        script += [
            f"zpty -w -n z '{line}'$'\\t\\C-u'",
            f"zpty -w z 'print DONE$(( {n} * 7 ))'",
            f"zpty -r -m z out '*DONE{n * 7}*QQ> *'",
            'print -r -- "$out"',
            "print -r -- '@@SECTION@@'",
        ]
    script.append("zpty -d z")
    result = subprocess.run(
        [zsh, "-f", "-c", "\n".join(script)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|[\r\b]", " ", result.stdout)  # the line editor's
    return plain.split("@@SECTION@@")[: len(lines)]


def offered(listing: str, word: str) -> bool:
    """Whether ``word`` stands alone (a candidate, not part of a description) in a listing."""
    return re.search(rf"(^|\s){re.escape(word)}(\s|$)", listing, re.MULTILINE) is not None


def test_zsh_offers_every_subcommand_and_option() -> None:
    commands = subparsers()
    ordered = sorted(commands)
    listings = zsh_complete("tunnel ", *(f"tunnel {c} --" for c in ordered))
    for command in commands:
        assert offered(listings[0], command), f"zsh does not offer {command}:\n{listings[0]}"
    for command, listing in zip(ordered, listings[1:], strict=True):
        for option in long_options(commands[command]):
            assert offered(listing, option), f"zsh: tunnel {command} {option}:\n{listing}"
    run = listings[1 + ordered.index("run")]
    assert not offered(run, "--pid")  # another subcommand's option


def test_zsh_completes_log_levels() -> None:
    (listing,) = zsh_complete("tunnel run --log-level ")
    assert all(offered(listing, level) for level in LOG_LEVELS), listing
