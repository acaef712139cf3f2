"""The journal file on disk: the checks ``start()`` makes, the one-daemon lock, its identity.

One daemon per journal: ``start()`` takes an exclusive ``flock`` on ``<journal>.lock``
beside the (symlink-resolved) file, writes its pid there and holds it until ``close()``; a
second Journal on the same file, in this process or another, gets ``JournalLocked`` (naming
the pid) instead of interleaving its run with the first one's. The lock file is left in
place, since unlinking it would let a third daemon lock a fresh inode while the second still
holds the old one; the kernel drops the lock when its process dies, so a crash never leaves
the journal locked. ``start()`` also refuses, as one-line ``JournalError``s naming the path
and the reason, a path that is a directory, in a directory this user cannot write, or a
file that is not an SQLite database.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Final

from mmbot.journal.model import JournalError, JournalLocked

__all__ = ["check_path", "file_identity", "lock_holder", "release_lock", "take_lock"]

_SQLITE_HEADER: Final = b"SQLite format 3\x00"


def _why(exc: OSError) -> str:
    # "Permission denied" reads better in a one-line error than "[Errno 13] ...: '/x'".
    return exc.strerror or str(exc)


def _lock_path(path: Path) -> Path:
    # Beside the real file, so two spellings of one journal (a symlink, a relative path)
    # still meet at one lock.
    real = path.resolve()
    return real.with_name(real.name + ".lock")


def _lock_holder(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def release_lock(fd: int) -> None:
    """Give up the journal lock held through ``fd`` and close it."""
    try:
        # Blanked while still held, so the file never names a pid that no longer holds it.
        os.ftruncate(fd, 0)
        # Explicit, not just close(): a forked child sharing the descriptor would keep it.
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass
    finally:
        os.close(fd)


def _make_parent(path: Path, parent: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (parent, *parent.parents) if p.is_file()), None)
        why = (
            f"{blocker} is not a directory"
            if blocker is not None
            else f"cannot create directory {parent}: {_why(exc)}"
        )
        raise JournalError(f"cannot open journal {path}: {why}") from exc


def _check_creatable(path: Path, parent: Path) -> None:
    # What mkdir(parents=True) in start() would run into, found without creating anything.
    nearest = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if nearest is None:
        raise JournalError(f"cannot open journal {path}: cannot create directory {parent}")
    if not nearest.is_dir():
        raise JournalError(f"cannot open journal {path}: {nearest} is not a directory")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise JournalError(
            f"cannot open journal {path}: cannot create directory {parent}: "
            f"{nearest} is not writable by this user"
        )


def check_path(path: Path, *, create: bool = True) -> None:
    """Refuse, saying why, a path SQLite would only fail on with an obscure message.

    With ``create=False`` (``mmbot check-config``) nothing is created: a missing directory
    passes if this user could create it.
    """
    parent = path.parent
    if create:
        _make_parent(path, parent)
    elif not parent.is_dir():
        _check_creatable(path, parent)
        return  # no journal can exist yet in a directory that does not
    if path.is_dir():
        raise JournalError(f"cannot open journal {path}: it is a directory, not a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        # SQLite creates its -wal and -shm files (and we the lock file) beside the journal.
        raise JournalError(
            f"cannot open journal {path}: directory {parent} is not writable by this user"
        )
    if not path.exists():
        return
    if not path.is_file():
        raise JournalError(f"cannot open journal {path}: it is not a regular file")
    if not os.access(path, os.R_OK | os.W_OK):
        raise JournalError(
            f"cannot open journal {path}: the file is not readable and writable by this user"
        )
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise JournalError(f"cannot open journal {path}: {_why(exc)}") from exc
    # An empty file is a valid, empty database to SQLite.
    if header and header != _SQLITE_HEADER:
        raise JournalError(f"cannot open journal {path}: it is not an SQLite database")


# ``lock_holder`` (``mmbot journal runs``) holds a shared lock for microseconds to see
# whether a daemon holds the exclusive one; a daemon starting at that instant retries for
# this long rather than report a running mmbot that is not there.
_PROBE_GRACE_SECONDS: Final = 0.25


def _flock_exclusive(fd: int) -> None:
    deadline = time.monotonic() + _PROBE_GRACE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def lock_holder(path: Path) -> int | None:
    """The pid of the daemon holding the journal at ``path`` (0: unknown), None if none does."""
    try:
        fd = os.open(_lock_path(path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"cannot inspect journal lock of {path}: {_why(exc)}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _lock_holder(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def take_lock(path: Path) -> int:
    """Lock the journal at ``path`` for this Journal alone; the open lock file's descriptor."""
    lock_path = _lock_path(path)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise JournalError(
            f"cannot open journal {path}: cannot open lock file {lock_path}: {_why(exc)}"
        ) from exc
    try:
        _flock_exclusive(fd)
    except BlockingIOError:
        pid = _lock_holder(fd)
        os.close(fd)
        holder = "a process that has not written its pid yet" if pid is None else f"pid {pid}"
        if pid == os.getpid():
            holder += ", this very process"
        raise JournalLocked(
            f"another mmbot is running on this journal: {path} is locked by "
            f"{holder} (lock file {lock_path})"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise JournalError(
            f"cannot lock journal {path} (lock file {lock_path}): {_why(exc)}"
        ) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        release_lock(fd)
        raise JournalError(
            f"cannot open journal {path}: cannot write lock file {lock_path}: {_why(exc)}"
        ) from exc
    return fd


def file_identity(path: Path) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of the file at ``path``, to notice it being deleted or replaced."""
    try:
        found = os.stat(path)
    except OSError as exc:
        raise JournalError(f"cannot open journal {path}: {_why(exc)}") from exc
    return (found.st_dev, found.st_ino)
