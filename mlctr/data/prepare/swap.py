"""The output side of a prepare: checks of `--out`, one-line errors for what writing it
meets, and the atomic swap of a finished build into place.

A dataset is built in a temporary sibling of `out` (same file system) and swapped in
only once complete, so a failure (bad input, a full disk, a kill) leaves whatever `out`
held before untouched. The caller holds the exclusive lock of `out` (mlctr.locking).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile

from mlctr import locking, xla_cpu
from mlctr.data import layout
from mlctr.data.errors import DatasetError


def check_output(out: str, overwrite: bool) -> None:
    """One clear DatasetError when `out` cannot take a dataset (checked before any work).

    A symlink is refused, not followed: the swap would replace the link by a local
    directory and leave the target's old dataset (and a stray build) behind.
    """
    if os.path.islink(out):
        raise DatasetError(out, f"is a symlink (to {os.readlink(out)}); prepare refuses links: "
                           f"pass the target directory itself, --out={os.path.realpath(out)}",
                           reason="output_symlink")
    if os.path.exists(out) and not os.path.isdir(out):
        raise DatasetError(out, "exists and is not a directory; choose another --out",
                           reason="output_not_directory")
    if os.path.exists(layout.feature_map_path(out)) and not overwrite:
        raise DatasetError(out, "already holds a prepared dataset; pass --overwrite "
                           "(overwrite=True) to replace it, or choose another --out",
                           reason="output_exists")
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK):
        raise DatasetError(out, f"cannot be written: no write permission in {existing}",
                           reason="output_not_writable")


def output_error(out: str, error: OSError) -> DatasetError:
    """The one-line DatasetError for an OSError met while writing a dataset into `out`."""
    where = error.filename or out
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if error.errno == errno.ENOSPC else \
            "disk quota exceeded"
        try:
            free = f" ({shutil.disk_usage(os.path.dirname(out)).free / 2**30:.1f} GiB free now)"
        except OSError:
            free = ""
        return DatasetError(out, f"{what} while writing {where}{free}; nothing was "
                            "changed in the output directory: free space and run again",
                            reason="no_space")
    return DatasetError(out, f"cannot write {where}: {error.strerror or error}; nothing was "
                        "changed in the output directory", reason="output_error")


def remove_if_only_lock(out: str) -> None:
    """Removes an `out` this call created and left holding nothing but the lock file."""
    with contextlib.suppress(OSError):
        if os.listdir(out) == [locking.LOCK_NAME]:
            os.remove(os.path.join(out, locking.LOCK_NAME))
            os.rmdir(out)


def build_and_swap(out: str, build) -> dict:
    """Runs build(directory, writers) -> feature map in a temporary sibling of `out`, adds
    the checksums and swaps the result in (the caller holds the lock)."""
    xla_cpu.keep_freed_blocks()
    _remove_stale_builds(out)
    directory = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=_build_prefix(out))
    writers: list[layout.NpyWriter] = []
    try:
        feature_map = build(directory, writers)
        feature_map["checksums"] = layout.compute_checksums(directory, feature_map)
        layout.write_json_atomic(layout.feature_map_path(directory), feature_map)
        _make_readable(directory)
        _swap_into(directory, out)
    finally:
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(directory, ignore_errors=True)
    return feature_map


def _build_prefix(out: str) -> str:
    return f".{os.path.basename(out)}.prepare-"


def _remove_stale_builds(out: str) -> None:
    """Removes build directories a killed prepare left next to `out` (the lock is ours)."""
    parent, prefix = os.path.dirname(out), _build_prefix(out)
    for name in os.listdir(parent):
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _make_readable(build: str) -> None:
    """Gives the build directory the mode a plain mkdir would (mkdtemp makes it 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(build, 0o777 & ~umask)


def _dataset_entries() -> set[str]:
    """The names in a dataset directory that prepare writes (all else in `out` is kept)."""
    names = {layout.FEATURE_MAP, "vocab"}
    for split in layout.SPLITS:
        names |= {os.path.basename(path("", split))
                  for path in (layout.ids_path, layout.label_path, layout.true_prob_path)}
    return names


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps two directories (Linux renameat2 RENAME_EXCHANGE).

    Returns False where the C library or the file system does not offer it.
    """
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)


def _swap_into(build: str, out: str) -> None:
    """Puts the finished dataset `build` at `out`; out's other entries move along.

    One atomic exchange where the system offers it, else two renames (between which,
    for an instant, `out` does not exist; a crash there leaves both directories).
    """
    if _exchange(build, out):
        old = build  # the exchange left the previous `out` here
    else:
        old = build + ".old"
        os.rename(out, old)
        try:
            os.rename(build, out)
        except OSError:
            os.rename(old, out)
            raise
    own = _dataset_entries()
    for name in os.listdir(old):  # raw/ of a synthetic dataset, the held .lock, ...
        if name not in own and not os.path.exists(os.path.join(out, name)):
            os.rename(os.path.join(old, name), os.path.join(out, name))
    shutil.rmtree(old, ignore_errors=True)
