"""Checkpoints with orbax: the resumable run state and per-peer best weights.

Two kinds of checkpoint live in a run directory:

* `checkpoints/<step>/` (`RunCheckpoints`, an orbax `CheckpointManager`): everything a
  run needs to continue bit for bit: `state` (stacked params, optimizer states, batch
  stats, rng, per-peer learning rates), `best` (each peer's best weights so far) and
  `progress` (JSON: step, data position, per-peer early-stopping schedule, the config
  and a fingerprint of the dataset, checked on resume). Written every
  `checkpoint.ckpt_steps` updates, at the end and on SIGTERM; the newest
  `checkpoint.keep` are kept, older ones deleted only once a newer one is complete.
* `best/`: the best weights of every peer, keyed by peer name, unstacked, exported when
  a run ends. This is what `config.init_from` reads to finetune; keyed by name so a
  finetune may pick any subset of a pretrained group.

Orbax writes each checkpoint into a temporary directory and renames it when every item
is complete, so a crash during a save never leaves a checkpoint that looks complete
(leftover temporary directories are ignored and removed at the next start).

Bit rot and torn copies: once a checkpoint is complete, process 0 writes a manifest,
`sha256.json`, with the SHA-256 of every file in it (written to a temporary name and
renamed, so it is whole or absent). Restoring verifies it. A resume whose newest
checkpoint fails the check, or cannot be read, moves it to `<workdir>/corrupt_checkpoints/`
(nothing is deleted), says so in one warning line and resumes from the newest intact one;
with none intact it stops with one error line. `best/` is written to a temporary sibling
with its manifest and swapped in, so a failed save (a full disk) leaves the previous one.
"""
from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from mlctr.run import resume

BEST_DIR = "best"
CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"
MANIFEST = "sha256.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match the config."""


class _NoOrbaxTraceback:
    """Keeps the message of orbax's own error logs and drops their traceback.

    A failed background save (a full disk) makes orbax log the exception with a
    traceback from its writer thread before `RunCheckpoints.wait` raises it; the user
    gets that failure as one `CheckpointError` line instead.
    """

    def filter(self, record) -> bool:
        if record.exc_info and f"{os.sep}orbax{os.sep}" in (record.pathname or ""):
            first = (str(record.exc_info[1]).strip().splitlines() or [""])[0][:300]
            message = record.getMessage()
            record.msg = message if first in message else f"{message} ({first})"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def _quiet_orbax_tracebacks():
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(f, _NoOrbaxTraceback) for f in absl_logger.filters):
        absl_logger.addFilter(_NoOrbaxTraceback())
    if not getattr(sys.unraisablehook, "_mlctr", False):
        sys.unraisablehook = _unraisable_hook(sys.unraisablehook)


def _unraisable_hook(previous):
    """Drops the "Event loop is closed" that a failed orbax save leaves behind.

    When a background write fails (a full disk, a truncated file on restore), orbax's
    writer threads may signal an asyncio loop that has already closed; Python then prints
    that as an ignored exception with a traceback after the real error is reported.
    """

    def hook(unraisable):
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    hook._mlctr = True
    return hook


def _out_of_space(error: BaseException) -> bool:
    """Whether `error` (or an error it wraps) is a full disk or quota."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _file_digests(directory: str) -> dict[str, str]:
    """{path relative to `directory`: sha256 hex} of every file under it but the manifest."""
    digests = {}
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory)
            if relative == MANIFEST:
                continue
            with open(path, "rb") as f:
                digests[relative] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


def write_manifest(directory: str) -> None:
    """Writes `<directory>/sha256.json`, the digest of every file, atomically."""
    manifest = {"algorithm": "sha256", "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": _file_digests(directory)}
    path = os.path.join(directory, MANIFEST)
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def verify_manifest(directory: str) -> bool:
    """Checks every file of `directory` against its manifest.

    Returns:
      True if the manifest is there and every digest matches; False if `directory` has
      no manifest (written before checksums existed, or its process died between the
      checkpoint and the manifest).

    Raises:
      CheckpointError: a file differs from, is missing from or is absent in the manifest
        (one line naming the first such file), or the manifest itself is unreadable.
    """
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return False
    try:
        with open(path) as f:
            expected = json.load(f)["files"]
        dict(expected)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable checksum manifest ({e})") from None
    try:
        actual = _file_digests(directory)
    except OSError as e:
        raise CheckpointError(f"{directory}: cannot read it to verify its checksums ({e})") from None
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            raise CheckpointError(f"{directory}/{name}: missing (listed in {MANIFEST})")
        if name not in expected:
            raise CheckpointError(f"{directory}/{name}: not listed in {MANIFEST} (added later?)")
        if actual[name] != expected[name]:
            raise CheckpointError(f"{directory}/{name}: content differs from its sha256 in "
                                  f"{MANIFEST} (corrupted on disk)")
    return True


def save_peer_weights(run_dir: str, variables_by_name: dict[str, Any], extra: dict | None = None) -> str:
    """Saves {peer name: {'params', 'batch_stats'}} to <run_dir>/best (replacing it).

    The weights and their manifest are written to `best.tmp` and swapped in only when
    complete, so a failed save (a full disk) leaves the previous `best/` as it was.

    Raises:
      CheckpointError: the save failed (one line saying why; the old `best/` is kept).
    """
    path = os.path.abspath(os.path.join(run_dir, BEST_DIR))
    tmp, old = path + ".tmp", path + ".old"
    _quiet_orbax_tracebacks()
    if jax.process_index() == 0 and os.path.isdir(old):
        shutil.rmtree(old)  # left by a crash after the swap
    try:
        checkpointer = ocp.StandardCheckpointer()  # force=True replaces a leftover best.tmp
        checkpointer.save(tmp, jax.device_get(variables_by_name), force=True)
        checkpointer.wait_until_finished()
        if jax.process_index() == 0:
            write_manifest(tmp)
            with open(path + ".json.tmp", "w") as f:
                json.dump({"peers": sorted(variables_by_name), **(extra or {})}, f, indent=1)
            if os.path.isdir(path):
                os.rename(path, old)
            os.rename(tmp, path)
            os.replace(path + ".json.tmp", path + ".json")
            shutil.rmtree(old, ignore_errors=True)
    except Exception as e:
        if os.path.isdir(old) and not os.path.isdir(path):
            os.rename(old, path)
        if jax.process_index() == 0:  # free what the failed save took (orbax's tmp dirs too)
            for leftover in glob.glob(glob.escape(tmp) + "*"):
                shutil.rmtree(leftover, ignore_errors=True)
        why = ("the disk is full (no space left on device)" if _out_of_space(e)
               else f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}")
        kept = f"the previous {path} is kept" if os.path.isdir(path) else "nothing was saved"
        raise CheckpointError(f"cannot save the best weights to {path}: {why}; {kept}") from e
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("mlctr: best weights saved")
    return path


def load_peer_weights(run_dir: str, names: list[str] | None = None) -> dict[str, Any]:
    """Loads the best weights saved by `save_peer_weights`.

    Args:
      run_dir: a run directory (or its `best/` directory).
      names: peers to return (all if None).

    Returns:
      {peer name: {'params': ..., 'batch_stats': ...}} of numpy arrays.

    Raises:
      CheckpointError: if there is no complete checkpoint or a name is missing.
    """
    path = os.path.abspath(run_dir if os.path.basename(run_dir.rstrip("/")) == BEST_DIR
                           else os.path.join(run_dir, BEST_DIR))
    if not os.path.isdir(path):
        raise CheckpointError(f"no peer weights at {path} (did the pretraining run finish?)")
    _quiet_orbax_tracebacks()
    if not verify_manifest(path):
        logging.warning("%s has no checksum manifest (%s); its content is not verified", path,
                        MANIFEST)
    try:
        tree = ocp.StandardCheckpointer().restore(path)
    except Exception as e:  # orbax raises many types for a damaged directory
        detail = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"cannot read peer weights at {path}: it is truncated or damaged "
                              f"({type(e).__name__}: {detail})") from e
    tree = jax.tree_util.tree_map(np.asarray, tree)
    if names is not None:
        missing = [name for name in names if name not in tree]
        if missing:
            raise CheckpointError(f"{path} has no weights for peer(s) {missing}; it holds {sorted(tree)}")
        tree = {name: tree[name] for name in names}
    return tree


def peer_weights_exist(run_dir: str) -> bool:
    return os.path.isdir(os.path.join(run_dir, BEST_DIR))


class RunCheckpoints:
    """The resumable checkpoints of one run, <workdir>/checkpoints/<step>/.

    Every process of a multi-process run must create it and call `save`/`restore`
    together (orbax writes each process's shards and synchronises); the directory must
    be on storage all processes share.

    Args:
      workdir: the run directory.
      keep: how many of the newest checkpoints to keep (>= 1).
    """

    ITEMS = ("state", "best", "progress")

    def __init__(self, workdir: str, *, keep: int):
        if keep < 1:
            raise ValueError(f"checkpoint.keep must be >= 1, got {keep}")
        _quiet_orbax_tracebacks()
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, CHECKPOINT_DIR)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 cleanup_tmp_directories=True),
            item_names=self.ITEMS)
        self.last_saved_step: int | None = None
        self._pending: list[int] = []  # saved steps whose manifest is not written yet

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, best, progress: dict):
        """Starts writing checkpoint `step` (asynchronously: the arrays are copied first,
        so training may go on and donate them); `wait` blocks until it is complete.

        Raises:
          CheckpointError: the previous save failed (e.g. the disk is full); one line
            saying what ran out and which checkpoint is the newest intact one.
        """
        self.wait()  # orbax waits for the previous save anyway; its manifest is written here
        try:
            self._manager.save(step, force=True, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), best=ocp.args.StandardSave(best),
                progress=ocp.args.JsonSave(progress)))
        except Exception as e:
            raise self._save_failed(step, e) from e
        self._pending.append(step)
        self.last_saved_step = step

    def wait(self):
        """Blocks until every save is complete, then writes their checksum manifests."""
        try:
            self._manager.wait_until_finished()
            if jax.process_index() == 0:
                for step in self._pending:
                    directory = os.path.join(self.directory, str(step))
                    if os.path.isdir(directory):  # not already deleted by max_to_keep
                        write_manifest(directory)
        except Exception as e:
            step = self._pending[-1] if self._pending else self.last_saved_step
            self._pending = []
            raise self._save_failed(step, e) from e
        self._pending = []

    def close(self):
        """Waits for the saves in flight (writing their manifests) and closes the manager."""
        try:
            self.wait()
        finally:
            try:
                self._manager.close()
            except Exception as e:  # the save error, if any, is already raised by wait()
                logging.warning("closing the checkpoint manager of %s: %s", self.directory, e)

    def _save_failed(self, step: int | None, error: Exception) -> CheckpointError:
        self._manager.reload()
        intact = [s for s in self.all_steps() if s != step]
        kept = (f"the checkpoint at step {intact[-1]} is intact and a rerun resumes from it"
                if intact else "there is no earlier checkpoint")
        why = ("the disk is full (no space left on device)" if _out_of_space(error)
               else f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}")
        return CheckpointError(f"saving the checkpoint of step {step} in {self.directory} "
                               f"failed: {why}; {kept}")

    def restore(self, abstract_state, abstract_best, *, config: dict, dataset: dict,
                table_rows: int | None = None):
        """Restores the newest intact checkpoint onto the given shapes and shardings.

        A checkpoint that fails its checksums or cannot be read is moved to
        `<workdir>/corrupt_checkpoints/` (one warning line) and the next older one is
        tried.

        Args:
          abstract_state, abstract_best: pytrees of jax.ShapeDtypeStruct (with
            shardings) that the restored arrays take.
          config: the current config as a dict (`json.loads(config.to_json())`).
          dataset: the current dataset fingerprint (see `progress['dataset']`).
          table_rows: rows of the embedding tables before padding to `mesh.table`
            (`Peers.vocab_size`: the quotient-remainder layout's rows with QR on); None:
            the dataset's vocab_size.

        Returns:
          (state, best, progress).

        Raises:
          CheckpointError: no checkpoint is intact, or the newest readable one was
            written by a run with another config or dataset. Nothing is deleted.
        """
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        bad = []  # (step, why), newest first
        for step in reversed(steps):
            try:
                progress = self._read_progress(step)
            except CheckpointError as e:
                bad.append((step, str(e)))
                continue
            self._check_matches(step, progress, config, dataset, table_rows)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    best=ocp.args.StandardRestore(abstract_best)))
                state, best = restored["state"], restored["best"]
                _check_like(state, abstract_state)
                _check_like(best, abstract_best)
            except Exception as e:
                bad.append((step, self._unreadable(step, e)))
                continue
            if bad:
                self._set_aside(bad, step)
            self.last_saved_step = step
            return state, best, progress
        raise CheckpointError(
            f"no intact checkpoint in {self.directory}: "
            + "; ".join(f"step {s}: {why}" for s, why in bad)
            + f". Nothing was changed; to start this run over: mv {self.directory} "
            f"{self.workdir}/bad_checkpoints")

    def _read_progress(self, step: int) -> dict:
        """Verifies checkpoint `step`'s checksums and reads its progress item."""
        directory = os.path.join(self.directory, str(step))
        if not verify_manifest(directory):
            logging.warning("checkpoint %s has no checksum manifest (%s: written by an older "
                            "version, or its process ended before writing it); restoring it "
                            "unverified", directory, MANIFEST)
        try:
            progress = self._manager.restore(step, args=ocp.args.Composite(
                progress=ocp.args.JsonRestore()))["progress"]
            int(progress["step"])
        except Exception as e:  # orbax raises many types for a damaged directory
            raise CheckpointError(self._unreadable(step, e)) from e
        return progress

    def _check_matches(self, step: int, progress: dict, config: dict, dataset: dict,
                       table_rows: int | None = None):
        differences = resume.config_differences(progress.get("config", {}), config)
        if progress.get("dataset") != dataset:
            differences.append(f"dataset: checkpoint {progress.get('dataset')}, now {dataset}")
        differences += resume.table_padding_difference(
            progress.get("config", {}), config, table_rows or (dataset or {}).get("vocab_size"))
        if differences:
            raise CheckpointError(
                f"the checkpoint at {self.directory}/{step} was written by a different run; it "
                "does not match this config (" + "; ".join(differences) + "). Use another "
                "--workdir for a new run (the checkpoints there are kept as they are).")

    def _unreadable(self, step: int, error: Exception) -> str:
        detail = (str(error).strip().splitlines() or [""])[0][:300]
        return (f"{self.directory}/{step} cannot be restored: it is corrupt or incomplete "
                f"({type(error).__name__}: {detail})")

    def _set_aside(self, bad: list[tuple[int, str]], restored: int):
        """Moves the bad checkpoints newer than `restored` out of the manager's way."""
        aside = os.path.join(self.workdir, CORRUPT_DIR)
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            for step, _ in bad:
                target = os.path.join(aside, str(step))
                while os.path.exists(target):
                    target += "_"
                os.rename(os.path.join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("mlctr: bad checkpoints set aside")
        self._manager.reload()
        logging.warning(
            "resuming from the checkpoint at step %d, the newest intact one: %s; moved to %s",
            restored, "; ".join(f"step {s}: {why}" for s, why in bad), aside)


def _check_like(tree, abstract):
    """Raises ValueError unless `tree` has the structure, shapes and dtypes of `abstract`."""
    if jax.tree_util.tree_structure(tree) != jax.tree_util.tree_structure(abstract):
        raise ValueError("restored tree structure differs from the model's")
    for (path, x), a in zip(jax.tree_util.tree_leaves_with_path(tree),
                            jax.tree_util.tree_leaves(abstract)):
        if x.shape != a.shape or x.dtype != a.dtype:
            raise ValueError(f"{jax.tree_util.keystr(path)}: restored {x.dtype}{list(x.shape)}, "
                             f"expected {a.dtype}{list(a.shape)}")
