"""Durable writes of the model store: a whole file replaced, a folder removed, a line appended.

Each leaves a file either as it was or as it is meant to be after a crash at any point:

- :func:`write_file_durable`: a temp name in the same folder, fsync, rename over the target;
- :func:`remove_tree`: renamed to a dot-name first, so a half-removed folder is never mistaken
  for a version;
- :class:`JsonLines`: the append-only log of one JSON object per line (``ledger.jsonl`` and the
  ``donefile``). A crash while appending can leave a last line without its newline: that line was
  never acknowledged (its fsync did not return), so reads leave it out and the next append cuts
  it off.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import StoreError
from ..jsonsafe import strict_dumps


@contextmanager
def naming(path):
    """Re-raise an ``OSError`` that names no file as the same error naming `path`: a full disk's
    ENOSPC from ``write`` or ``fsync`` says nothing of where it happened.

    >>> with naming("/m/ledger.jsonl"):
    ...     raise OSError(28, "No space left on device")
    Traceback (most recent call last):
    OSError: [Errno 28] No space left on device: '/m/ledger.jsonl'
    """
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        if e.errno is None:
            raise OSError(f"{path}: {e}") from e
        raise OSError(e.errno, e.strerror, str(path)) from e


def fsync_dir(path) -> None:
    """fsync a directory so a rename / create / unlink in it is durable."""
    with naming(path):
        fd = os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_file_durable(path, data, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file beside it, fsync, rename, then (unless
    ``sync_dir`` is False: the caller syncs the folder once after several files) fsync the
    folder. A failed write leaves no temp file; its error names `path`. Safe from several threads at once."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with naming(path), open(tmp, "wb") as f:
            f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(path.parent)


def remove_tree(path: Path) -> None:
    """Remove a folder: first renamed to ``.trash-<name>-<ns>`` (durably), then deleted."""
    path = Path(path)
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{time.time_ns()}")
    path.rename(trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash)


class JsonLines:
    """An append-only file of one JSON object per line, each append fsync'd before it returns.

    Reading and appending are separate steps so a writer can decide what to append from what it
    read (the next ``seq``, a line not yet listed); callers that append hold the store lock
    between the two. Errors are ``error`` (a :class:`StoreError` subclass) naming file and line.
    """

    def __init__(self, path, error: type[StoreError] = StoreError):
        self.path = os.fspath(path)
        self.error = error

    def read_lines(self) -> tuple[list[bytes], int]:
        """The acknowledged lines (without their newlines) and their length in bytes."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return [], 0
        good = len(data) if data.endswith(b"\n") else data.rfind(b"\n") + 1
        return (data[:good].split(b"\n")[:-1] if good else []), good

    def parse(self, line: bytes, number: int):
        """Line ``number`` (1-based) as JSON; an unreadable one is ``self.error`` naming it."""
        try:
            return json.loads(line)
        except ValueError as e:
            raise self.error(f"{self.path}: line {number} is not JSON: {e}") from None

    def read(self) -> tuple[list, int]:
        """Every acknowledged line parsed, and their length in bytes (what :meth:`append` keeps)."""
        lines, good = self.read_lines()
        return [self.parse(line, i) for i, line in enumerate(lines, 1)], good

    def append(self, record: dict, good: int, *, hook=None) -> None:
        """Write ``record`` as one line after the first ``good`` bytes (dropping a torn tail).

        ``hook(step)`` is for crash-injection tests only: it is called with ``"ledger_partial"``
        after half the line has been written and flushed.
        """
        line = (strict_dumps(record, sort_keys=False, separators=(",", ":")) + "\n").encode()
        created = not os.path.exists(self.path)
        with naming(self.path), open(self.path, "wb" if created else "r+b") as f:
            f.truncate(good)
            f.seek(good)
            if hook is not None:
                half = len(line) // 2
                f.write(line[:half])
                f.flush()
                os.fsync(f.fileno())
                hook("ledger_partial")
                line = line[half:]
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if created:
            fsync_dir(os.path.dirname(self.path) or ".")
