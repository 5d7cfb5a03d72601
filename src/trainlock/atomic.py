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
import re
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


def _siblings(path: Path) -> list[Path]:
    """The temporary directories replace_dir makes beside `path` (`.NAME.new-XXXXXXXX`, `.NAME.old-XXXXXXXX`)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(new|old)-[a-z0-9_]{{8}}")
    try:
        return [p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir()]
    except OSError:
        return []


def stale_copies(path: Path, complete: Callable[[Path], bool] | None = None) -> list[Path]:
    """Directories that a killed replace_dir left beside `path` (newest first; new copies before old ones at the
    same time), only those `complete(dir)` accepts when given (a copy killed while it was built is incomplete)."""
    path = Path(path)
    found = []
    for p in _siblings(path):
        try:
            found.append((p.stat().st_mtime, ".new-" in p.name, p))
        except OSError:
            continue
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [p for _, _, p in found if complete is None or complete(p)]


def remove_stale_copies(path: str | Path) -> list[Path]:
    """Remove what killed replace_dir runs left beside `path`; call it holding `exclusive(path)` (a running
    writer's own temporary directory is otherwise not told from a dead one's). Returns the removed paths."""
    gone = _siblings(Path(path))
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def replace_dir(path: str | Path, build: Callable[[Path], None], keep: Callable[[Path], bool] | None = None) -> Path:
    """Build a directory with `build(tmp)` and put it at `path`, complete or not at all.

    Files already in `path` that `keep(file)` accepts (default: every file `build` did not write) are
    carried over, so replacing a model directory loses none of the user's other files. An existing `path`
    that is not a directory is refused (ValueError; nothing is moved). The write holds `exclusive(path)`, and
    once it is in place the temporary directories of earlier killed writes to `path` are removed."""
    path = Path(path)
    with exclusive(path):
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory; a directory cannot replace a file (nothing moved)")
        _replace_dir(path, build, keep)
        remove_stale_copies(path)
    return path


def _replace_dir(path: Path, build: Callable[[Path], None], keep: Callable[[Path], bool] | None) -> Path:
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


_HELD: dict[str, int] = {}  # this process's locks: path -> depth (a nested exclusive() on a held path is free)


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on output `path` (a file `.NAME.lock` beside it) for the block; a second
    process asking for the same path fails at once with `Busy` instead of interleaving its writes.
    The lock dies with the process (flock), so a killed run never leaves a stale lock. Within one process
    the lock nests: a block inside another on the same path holds it already."""
    import fcntl

    path = Path(path)
    key = str(path.resolve())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    for _attempt in range(20):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise Busy(
                f"{path} is being written by another trainlock process (pid {holder}); wait for it to "
                f"finish or choose another output"
            ) from None
        try:  # the file we locked is still the one at `lock` (its holder unlinks it on release)
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise Busy(f"{path}: could not take the output lock {lock}; another process keeps replacing it")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
            with contextlib.suppress(OSError):
                os.unlink(lock)
    finally:
        os.close(fd)
