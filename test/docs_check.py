"""The docs check: the commands and links users copy from README.md and docs/*.md still work.

- every `flowclas-ros VERB ...` command (a line of a fenced code block, with its `\\` continuations,
  or an inline code span with arguments; `python -m flowclas_ros.cli VERB` and `torchrun ... -m
  flowclas_ros.cli VERB` too) is parsed by that verb's real argparse parser: the verb and every flag exist, required
  flags and positionals are present, values have the right type and choice. An inline span that only
  names the program or a verb (`flowclas-ros evaluate`) is prose: only the verb must exist. Placeholders in capitals
  (FILE, DIR, N, MODEL.onnx, KEY=VALUE) stand for any value; `[ ]` and `|` of usage notation and
  `...` are read as optional groups and left out;
- every `ros2 launch flowclas_ros detector.launch.py NAME:=VALUE` names an argument that the launch
  file declares;
- every relative link `[text](path#anchor)` resolves to a file, and an anchor to a heading of it.

`problems(path, text)` returns one line per problem (empty when the page is fine), so a test can
feed it a broken page and see it complain.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
from pathlib import Path
from typing import Iterator

from flowclas_ros import cli

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(?:[.=:/][A-Za-z0-9_.=/]*)?")
FENCE = re.compile(r"^(\s*)```")
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
LAUNCH_FILE = ROOT / "launch" / "detector.launch.py"


def doc_pages() -> list[Path]:
    """The pages users read: the README and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _code_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, logical line, is_block) of fenced code blocks (continuations joined) and of
    the inline code spans of the prose between them (a span may wrap onto the next line)."""
    in_fence = False
    pending, start = "", 0
    paragraph: list[tuple[int, str]] = []

    def spans() -> Iterator[tuple[int, str, bool]]:
        if paragraph:
            joined = " ".join(line for _, line in paragraph)
            for span in INLINE.findall(joined):
                yield paragraph[0][0], span, False
            paragraph.clear()

    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            yield from spans()
            in_fence = not in_fence
            continue
        if in_fence:
            if not pending:
                start = number
            stripped = line.rstrip()
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            yield start, pending + stripped, True
            pending = ""
        elif line.strip():
            paragraph.append((number, line.strip()))
        else:
            yield from spans()
    yield from spans()


def _strip_comment(command: str) -> str:
    """The command without a trailing shell comment (a `#` that starts a word)."""
    return re.split(r"(?:^|\s)#", command, maxsplit=1)[0]


def _split(command: str) -> list[str] | None:
    try:
        return shlex.split(_strip_comment(command))
    except ValueError:  # an unbalanced quote in prose: not a command
        return None


def _verb_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _is_placeholder(token: str) -> bool:
    return bool(PLACEHOLDER.fullmatch(token)) and any(c.isalpha() for c in token)


def _accepting_placeholders(parser: argparse.ArgumentParser) -> None:
    """Let a placeholder pass any type and choice check of `parser` (in place); a real value is
    still converted and checked."""
    for action in parser._actions:
        convert = action.type
        if callable(convert) and not getattr(convert, "_docs_check", False):
            def typed(value, _convert=convert):
                return value if _is_placeholder(value) else _convert(value)
            typed._docs_check = True
            action.type = typed
    check = parser._check_value

    def check_value(action, value):
        if not (isinstance(value, str) and _is_placeholder(value)):
            check(action, value)
    parser._check_value = check_value


class _ParseError(Exception):
    pass


def _usage_tokens(tokens: list[str]) -> list[str]:
    """Usage notation read as a plain command: brackets dropped, `|` and `...` left out."""
    out = []
    for token in tokens:
        token = token.strip("[]")
        if token and token not in ("|", "...", "…"):
            out.append(token)
    return out


def cli_problem(tokens: list[str], parsers: dict[str, argparse.ArgumentParser]) -> str | None:
    """Why `flowclas-ros` + tokens does not parse, or None when it does."""
    if not tokens:
        return "no verb"
    verb, args = tokens[0], _usage_tokens(tokens[1:])
    if verb not in parsers:
        return f"unknown verb {verb!r}"
    parser = parsers[verb]
    parser.allow_abbrev = False  # a page spells every flag out
    _accepting_placeholders(parser)

    def error(message: str) -> None:
        raise _ParseError(message)

    parser.error = error
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args(args)
    except _ParseError as exc:
        return f"flowclas-ros {verb}: {exc}"
    except SystemExit:  # --help
        return None
    return None


def _cli_tokens(tokens: list[str]) -> list[str] | None:
    """The verb and arguments when `tokens` run flowclas-ros, else None."""
    for i, token in enumerate(tokens):
        if token == "flowclas-ros":
            return tokens[i + 1:]
        if token == "-m" and i + 1 < len(tokens) and tokens[i + 1] == "flowclas_ros.cli":
            return tokens[i + 2:]
    return None


def launch_arguments() -> set[str]:
    spec = importlib.util.spec_from_file_location("detector_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name for name, _default, _desc in module.ARGUMENTS}


def launch_problem(tokens: list[str], known: set[str]) -> str | None:
    """Why `ros2 launch flowclas_ros detector.launch.py ARG:=...` names an unknown argument."""
    if tokens[:4] != ["ros2", "launch", "flowclas_ros", "detector.launch.py"]:
        return None
    for token in tokens[4:]:
        if ":=" in token:
            name = token.split(":=", 1)[0]
            if name not in known:
                return f"ros2 launch: the launch file has no argument {name!r} (known: {', '.join(sorted(known))})"
    return None


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    anchors, in_fence = set(), False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"#{1,6}\s+(.*)", line)):
            anchors.add(_slug(m.group(1)))
    return anchors


def link_problems(path: Path, text: str) -> list[str]:
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            out.append(f"link {target!r}: {dest} does not exist")
        elif anchor and dest.suffix == ".md":
            page = dest.read_text() if file_part else text
            if anchor not in _anchors(page):
                out.append(f"link {target!r}: no heading #{anchor} in {dest.name}")
    return out


def problems(path: Path, text: str) -> list[str]:
    """Every broken command or link of one page, as 'page:line: problem' lines."""
    parsers, known = _verb_parsers(), launch_arguments()
    name = path.name if path.parent == ROOT else f"{path.parent.name}/{path.name}"
    out = []
    for number, line, in_block in _code_lines(text):
        tokens = _split(line)
        if not tokens:
            continue
        cli_tokens = _cli_tokens(tokens)
        if not in_block and cli_tokens is not None and len(cli_tokens) <= 1:
            # prose naming the program or a verb (`flowclas-ros evaluate reports ...`): the verb
            # must exist, but it is a mention, not a command to run
            if cli_tokens and cli_tokens[0] not in parsers:
                out.append(f"{name}:{number}: unknown verb {cli_tokens[0]!r}: {line.strip()}")
            continue
        problem = cli_problem(cli_tokens, parsers) if cli_tokens is not None else launch_problem(tokens, known)
        if problem:
            out.append(f"{name}:{number}: {problem}: {line.strip()}")
    out.extend(f"{name}: {p}" for p in link_problems(path, text))
    return out


def commands_checked(text: str) -> int:
    """How many flowclas-ros commands a page holds (so a test can see the check saw them)."""
    return sum(1 for _, line, _ in _code_lines(text) if (t := _split(line)) and _cli_tokens(t) is not None)
