"""INI syntax: text -> {section: {key: raw value}}, every syntax problem a located error (pure).

``configparser`` does the reading, with three changes: ``[DEFAULT]`` is an ordinary section
(no keys leak from it into the others), a key is one word (so that ``accept 1.2.3.4:1``,
missing its ``=``, is a syntax error on its line rather than an unknown key named
``accept 1.2.3.4`` with the value ``1``), and every problem is collected instead of the
first one raised.
"""

from __future__ import annotations

import ast
import configparser
import re

from tunnel.config.context import Context, kind_of
from tunnel.config.schema import keys


class _Parser(configparser.RawConfigParser):
    # A key is one word followed by '=' or ':' (the stock pattern lets a key contain spaces).
    OPTCRE = re.compile(r"(?P<option>[^=:\s]+)\s*(?P<vi>[=:])\s*(?P<value>.*)$")


def close_match(word: str, choices: list[str]) -> str | None:
    """The choice ``word`` was most likely meant to be (a typo), or None."""
    import difflib  # only when there is a mistake to explain

    found = difflib.get_close_matches(word, choices, n=1)
    return found[0] if found else None


def read_ini(text: str, ctx: Context) -> dict[str, dict[str, str]] | None:
    """Every section's raw items (keys lower-cased), or None if nothing can be read."""
    parser = _read(text, ctx)
    if parser is None:
        return None
    return {name: _section_items(parser, name, ctx) for name in parser.sections()}


def _read(text: str, ctx: Context) -> configparser.RawConfigParser | None:
    parser = _new_parser(strict=True)
    try:
        parser.read_string(text, source=ctx.file)
    except configparser.MissingSectionHeaderError as exc:
        ctx.error(
            f"line {exc.lineno}: {_shorten(exc.line)} is outside any section",
            hint="start the file with a section header such as [tunnel] or [web]",
        )
        return None
    except (configparser.DuplicateSectionError, configparser.DuplicateOptionError) as exc:
        _report_duplicate(exc, ctx)
        return _read_lenient(text, ctx)
    except configparser.ParsingError as exc:
        _report_parsing_error(exc, text, ctx)
    except configparser.Error as exc:  # pragma: no cover - defensive, configparser internals
        ctx.error(f"cannot parse the file: {exc.message}", hint="check the file's syntax")
        return None
    return parser


def _read_lenient(text: str, ctx: Context) -> configparser.RawConfigParser | None:
    """Re-read after a duplicate so that the remaining problems are reported too."""
    parser = _new_parser(strict=False)
    try:
        parser.read_string(text, source=ctx.file)
    except configparser.ParsingError as exc:
        _report_parsing_error(exc, text, ctx)
    except configparser.Error:  # pragma: no cover - the strict pass already reported it
        return None
    return parser


def _new_parser(*, strict: bool) -> configparser.RawConfigParser:
    # A default section name that can never appear as a header: [DEFAULT] is an ordinary
    # (rejected) section, and no keys leak from it into every other section.
    return _Parser(
        strict=strict,
        interpolation=None,
        inline_comment_prefixes=("#", ";"),
        default_section="\n",
    )


def _report_duplicate(
    exc: configparser.DuplicateSectionError | configparser.DuplicateOptionError, ctx: Context
) -> None:
    if isinstance(exc, configparser.DuplicateOptionError):
        ctx.error(
            f"line {exc.lineno}: key {exc.option!r} is set twice",
            exc.section,
            exc.option,
            "keep only one of the lines",
        )
    else:
        ctx.error(
            f"line {exc.lineno}: section [{exc.section}] appears twice",
            exc.section,
            hint="merge the two sections or rename one",
        )


def _report_parsing_error(exc: configparser.ParsingError, text: str, ctx: Context) -> None:
    lines = text.splitlines()
    for lineno, line in exc.errors:
        content = _unrepr(line).strip()
        section = _section_at(lines, lineno)
        word, _, rest = content.replace("\t", " ").partition(" ")
        word = word.lower()
        if section is not None and rest.strip() and word in keys(kind_of(section)):
            # "accept 1.2.3.4:1": a known key, then its value without the '='.
            ctx.mentioned.add((section, word))
            ctx.error(
                f"line {lineno}: {_shorten(content)} has no '=' between the key and its value",
                section,
                word,
                f"write '{word} = {rest.strip()}'",
            )
            continue
        ctx.error(
            f"line {lineno}: cannot parse {_shorten(content)}",
            section,
            hint="lines must be '[section]', 'key = value' or comments starting with # or ;",
        )


def _section_at(lines: list[str], lineno: int) -> str | None:
    """The section a line number falls in (configparser does not say)."""
    for line in reversed(lines[: lineno - 1]):
        match = configparser.RawConfigParser.SECTCRE.match(line.strip())
        if match and not line[:1].isspace():
            return match.group("header")
    return None


def _unrepr(line: object) -> str:
    """configparser stores bad lines as repr() strings; undo that for the message."""
    text = str(line)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value if isinstance(value, str) else text


def _shorten(line: str, limit: int = 60) -> str:
    line = line.strip()
    return repr(line if len(line) <= limit else line[: limit - 3] + "...")


def _section_items(parser: configparser.RawConfigParser, name: str, ctx: Context) -> dict[str, str]:
    items = {}
    for key, value in parser.items(name, raw=True):
        if value and "\0" in value:
            # No setting can hold a NUL byte, and path functions raise ValueError on one
            # (found by fuzzing: keylog_file = ~<NUL>).
            ctx.error("contains a NUL byte", name, key, "remove it (is the file binary?)")
            continue
        items[key] = value or ""
    return items
