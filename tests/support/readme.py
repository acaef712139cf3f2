"""Reading the README in tests: its sections, headings and fenced code blocks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_HEADING = re.compile(r"^(#{1,6}) +(.+?) *$")
_FENCE = re.compile(r"^```(\w*) *$")


def _readme() -> str:
    """The README's text."""
    return README.read_text(encoding="utf-8")


def _lines_outside_code(text: str) -> list[tuple[str, bool]]:
    """Each line with whether it lies inside a fenced code block (fences count as inside)."""
    out: list[tuple[str, bool]] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            out.append((line, True))
            inside = not inside
            continue
        out.append((line, inside))
    return out


def _headings(text: str) -> list[tuple[int, str]]:
    found = []
    for line, in_code in _lines_outside_code(text):
        match = _HEADING.match(line)
        if match and not in_code:
            found.append((len(match[1]), match[2]))
    return found


def section(title: str, text: str | None = None) -> str:
    """The body under the one heading ``title``, up to the next heading of its level or above."""
    text = _readme() if text is None else text
    lines = _lines_outside_code(text)
    starts = [
        (i, len(m[1]))
        for i, (line, in_code) in enumerate(lines)
        if not in_code and (m := _HEADING.match(line)) and m[2] == title
    ]
    assert len(starts) == 1, f"README must have exactly one heading {title!r}, found {len(starts)}"
    start, level = starts[0]
    body: list[str] = []
    for line, in_code in lines[start + 1 :]:
        match = _HEADING.match(line)
        if match and not in_code and len(match[1]) <= level:
            break
        body.append(line)
    return "\n".join(body)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced code block in ``text`` as (language, body)."""
    blocks: list[tuple[str, str]] = []
    lang: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if lang is None:
            match = _FENCE.match(line)
            if match:
                lang, body = match[1], []
        elif line.startswith("```"):
            blocks.append((lang, "\n".join(body) + "\n"))
            lang = None
        else:
            body.append(line)
    assert lang is None, "unterminated code block"
    return blocks
