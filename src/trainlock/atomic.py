"""Writes that are complete or absent: a killed process never leaves a half-written file or directory.

A file is written to a temporary name in the same directory, flushed to disk (fsync) and renamed over
the target (rename is atomic within one file system). A directory is built complete under a
temporary name and then swapped in: on Linux with renameat2(RENAME_EXCHANGE), one atomic step;
elsewhere with two renames, and a reader that finds the target missing between them is pointed at
the complete copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_mode(kind: int) -> int:
    """The mode a plain open()/mkdir() would give (0o666 / 0o777 less the umask); mkstemp/mkdtemp use 0o600 / 0o700."""
    umask = os.umask(0)
    os.umask(umask)
    return kind & ~umask


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file, fsync, rename). Returns the path."""
    with writing_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_bytes(path, text.encode())


@contextlib.contextmanager
def writing_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write (by any library) that replaces `path` when the block ends without
    an error; `suffix` keeps an extension a writer needs (e.g. '.png' for matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.fchmod(fd, _default_mode(0o666))
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where that is unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def stale_copies(path: Path) -> list[Path]:
    """Complete directories that a killed replace_dir left beside `path` (newest first)."""
    return sorted(path.parent.glob(f".{path.name}.new-*"), key=lambda p: p.stat().st_mtime, reverse=True)


def replace_dir(path: str | Path, build: Callable[[Path], None], keep: Callable[[Path], bool] | None = None) -> Path:
    """Build a directory with `build(tmp)` and put it at `path`, complete or not at all.

    Files already in `path` that `keep(file)` accepts (default: every file `build` did not write) are
    carried over, so replacing a model directory loses none of the user's other files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    os.chmod(tmp, _default_mode(0o777))
    try:
        build(tmp)
        if path.is_dir():
            for item in path.iterdir():
                target = tmp / item.name
                if target.exists() or item.name.startswith(f".{path.name}.") or (keep and not keep(item)):
                    continue
                if item.is_dir():
                    shutil.copytree(item, target, symlinks=True)
                else:
                    shutil.copy2(item, target, follow_symlinks=False)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if path.is_dir() and _exchange(tmp, path):
            _fsync_dir(path.parent)
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory
            return path
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rmdir(old)
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)  # put the old directory back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        _fsync_dir(path.parent)
        return path
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class Busy(ValueError):
    """Another process holds the lock on an output path."""


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on output `path` (a file `.NAME.lock` beside it) for the block; a second
    process asking for the same path fails at once with `Busy` instead of interleaving its writes.
    The lock dies with the process (flock), so a killed run never leaves a stale lock."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise Busy(
                f"{path} is being written by another trainlock process (pid {holder}); wait for it to "
                f"finish or choose another output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(lock)
    finally:
        os.close(fd)
