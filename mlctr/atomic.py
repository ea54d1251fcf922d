"""Files written whole or not at all, through temporaries no one else can plant.

A file is written to a temporary created by `tempfile.mkstemp` in the target's own
directory (O_CREAT | O_EXCL: a random name that did not exist, so a link or file planted
there beforehand is never opened or followed), then renamed over the target. On any
failure (a full disk, a Ctrl-C) the temporary is removed: nothing `*.tmp` is left behind
and the previous file, if any, is intact. A fixed temporary name (`out.tmp`) instead lets
anyone who can write the directory redirect the write through a symlink.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: str, mode: str = "w", *, fsync: bool = False,
              encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Opens a fresh temporary beside `path`; on a clean exit it replaces `path`.

    Args:
      path: the file to write; a symlink at `path` itself is replaced, not followed.
      mode: "w" (text) or "wb" (binary).
      fsync: flush the temporary to disk before the rename.
      encoding: text encoding (ignored for binary mode).

    The file gets the mode any new file gets (0666 less the umask), not mkstemp's 0600,
    so other users of shared storage can read it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            fd = -1  # the file object owns it now
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def fresh_name(path: str, suffix: str = ".tmp") -> str:
    """A new, empty file beside `path` under a random name (mkstemp: O_EXCL, so never a
    planted link), for writers that open a file by name (numpy memmaps, gzip). The
    caller renames it over `path` or removes it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                               prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return tmp


def write_text(path: str, text: str, *, fsync: bool = False) -> None:
    """`text` as the whole content of `path`, atomically (see `replacing`)."""
    with replacing(path, fsync=fsync) as f:
        f.write(text)


def write_json(path: str, obj, *, fsync: bool = False, **dump_kwargs) -> None:
    """`obj` as JSON in `path`, atomically (see `replacing`)."""
    with replacing(path, fsync=fsync) as f:
        json.dump(obj, f, **dump_kwargs)
