"""The git commit mmbot was built from, for ``mmbot --version`` and ``mmbot_build_info``.

Resolved once per process, from the first of these that gives a commit:

1. the environment variable ``MMBOT_BUILD_COMMIT``, when set and not empty;
2. the stamp file ``mmbot/_commit.txt`` inside the installed package, which the image build
   writes (``python -I -m mmbot.buildinfo stamp COMMIT``; git-ignored in a checkout);
3. the git checkout the package is imported from (``.git`` next to the ``mmbot`` package,
   as in an editable install), read from its files: HEAD, loose refs and packed-refs. No
   ``git`` binary is run, so this works where git is not installed;
4. ``unknown``.

Only a hexadecimal object name is ever reported (7 to 64 digits, lower-cased): a value that
is not one is passed over, so neither a path nor any other text can reach a metric label.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Final

from mmbot import __version__

__all__ = [
    "COMMIT_ENV_VAR",
    "STAMP_FILE",
    "UNKNOWN",
    "build_commit",
    "read_git_commit",
    "resolve_commit",
    "version_line",
    "write_stamp",
]

#: Overrides every other source.
COMMIT_ENV_VAR: Final = "MMBOT_BUILD_COMMIT"
#: Written at image build time; read before the checkout's own metadata.
STAMP_FILE: Final = Path(__file__).with_name("_commit.txt")
#: Reported when no source gives a commit.
UNKNOWN: Final = "unknown"

_PACKAGE_DIR: Final = Path(__file__).resolve().parent
# SHA-1 object names are 40 digits, SHA-256 ones 64; 7 is git's shortest abbreviation.
_OBJECT_NAME: Final = re.compile(r"[0-9a-f]{7,64}")
# A symbolic ref may point at another; a cycle or a long chain is given up on.
_MAX_SYMREF_DEPTH: Final = 5
# HEAD, a loose ref, a .git file or a stamp is one short line; anything larger is not one.
_MAX_SMALL_FILE: Final = 4096


def _object_name(text: str | None) -> str | None:
    """``text`` as a lower-case object name, or None when it is not one."""
    if text is None:
        return None
    value = text.strip().lower()
    return value if _OBJECT_NAME.fullmatch(value) else None


def _read_small(path: Path) -> str | None:
    """A small text file's contents; None when it is missing, unreadable or too large."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_SMALL_FILE + 1)
    except OSError:
        return None
    if len(data) > _MAX_SMALL_FILE:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _git_dirs(checkout: Path) -> tuple[Path, Path] | None:
    """(git dir, common dir) of ``checkout``: ``.git`` itself, or where a ``.git`` file points.

    A linked worktree's ``.git`` is a file (``gitdir: ...``); its HEAD is in that git dir,
    and the branches are in the common dir that the git dir's ``commondir`` file names.
    """
    dot_git = checkout / ".git"
    if dot_git.is_dir():
        git_dir = dot_git
    elif dot_git.is_file():
        text = _read_small(dot_git)
        if text is None or not text.startswith("gitdir:"):
            return None
        git_dir = checkout / text.removeprefix("gitdir:").strip()
        if not git_dir.is_dir():
            return None
    else:
        return None
    common = _read_small(git_dir / "commondir")
    common_dir = git_dir / common.strip() if common and common.strip() else git_dir
    return git_dir, common_dir


def _packed_ref(common_dir: Path, ref: str) -> str | None:
    """The object name ``ref`` has in ``packed-refs``, if it is there."""
    try:
        lines = (common_dir / "packed-refs").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        # "# pack-refs with: ..." is a header, "^<name>" the peeled object of the tag above.
        if not line or line.startswith(("#", "^")):
            continue
        name, _, refname = line.partition(" ")
        if refname.strip() == ref:
            return _object_name(name)
    return None


def _valid_ref(ref: str) -> bool:
    parts = ref.split("/")
    return parts[0] == "refs" and len(parts) > 1 and all(p and p not in (".", "..") for p in parts)


def read_git_commit(checkout: Path) -> str | None:
    """The commit HEAD names in the git checkout at ``checkout``, read from its files."""
    dirs = _git_dirs(checkout)
    if dirs is None:
        return None
    git_dir, common_dir = dirs
    text = _read_small(git_dir / "HEAD")
    for _ in range(_MAX_SYMREF_DEPTH):
        if text is None:
            return None
        if not text.startswith("ref:"):
            return _object_name(text)  # a detached HEAD, or a loose ref's object name
        ref = text.removeprefix("ref:").strip()
        if not _valid_ref(ref):
            return None
        # A ref is loose (a file of its own) or packed; a loose one is the newer.
        loose = next(
            (found for base in (git_dir, common_dir) if (found := _read_small(base / ref))),
            None,
        )
        if loose is None:
            return _packed_ref(common_dir, ref)
        text = loose
    return None


def resolve_commit(
    *,
    environ: Mapping[str, str] | None = None,
    stamp: Path | None = None,
    checkout: Path = _PACKAGE_DIR.parent,
) -> str:
    """The commit from the first source that gives one (see the module docstring); uncached."""
    env = os.environ if environ is None else environ
    sources: tuple[Callable[[], str | None], ...] = (
        lambda: env.get(COMMIT_ENV_VAR),
        lambda: _read_small(STAMP_FILE if stamp is None else stamp),
        lambda: read_git_commit(checkout),
    )
    for source in sources:
        found = _object_name(source())
        if found is not None:
            return found
    return UNKNOWN


@cache
def build_commit() -> str:
    """The commit mmbot was built from, resolved on first use and cached for the process."""
    return resolve_commit()


def version_line(prog: str = "mmbot") -> str:
    """What ``mmbot --version`` prints: ``mmbot 0.1.0 (commit abc1234...)``."""
    return f"{prog} {__version__} (commit {build_commit()})"


def write_stamp(commit: str, stamp: Path | None = None) -> str | None:
    """Stamp ``commit`` into the installed package; an empty one removes the stamp.

    Returns the commit stamped (None when removed); raises ValueError when ``commit`` is
    not an object name, so a build given something else fails rather than ships it.
    """
    path = STAMP_FILE if stamp is None else stamp
    if not commit.strip():
        path.unlink(missing_ok=True)
        return None
    name = _object_name(commit)
    if name is None:
        raise ValueError(f"not a git commit (7 to 64 hexadecimal digits): {commit!r}")
    path.write_text(name + "\n", encoding="utf-8")
    return name


def main(argv: Sequence[str] | None = None) -> int:
    """``python -I -m mmbot.buildinfo stamp [COMMIT]``: the image build's stamp step."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "stamp" or len(args) > 2:
        print("usage: python -I -m mmbot.buildinfo stamp [COMMIT]", file=sys.stderr)
        return 2
    try:
        stamped = write_stamp(args[1] if len(args) == 2 else "")
    except (ValueError, OSError) as exc:
        print(f"mmbot.buildinfo: {exc}", file=sys.stderr)
        return 1
    print(f"build commit: {stamped or UNKNOWN + ' (no commit given, stamp removed)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
