"""The manifest of an export directory: what the model is, and the sha256 of every file.

`manifest.json` is written last; `verify` refuses a directory whose files differ from it
(a tampered or truncated model, a changed vocabulary, a file added or removed) in one
line naming the file. Standard library only: the numpy preprocessor and a serving
process read it without mlctr's training stack.
"""
from __future__ import annotations

import hashlib
import json
import os

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ExportError(Exception):
    """An export cannot be made or loaded; one line saying why."""


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: str) -> list[str]:
    """Every file under `directory` but the manifest, as sorted '/'-separated paths."""
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel != MANIFEST:
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def write(directory: str, info: dict) -> dict:
    """Writes `info` plus the sha256 of every file in `directory` as its manifest."""
    manifest = dict(info, manifest_version=FORMAT_VERSION,
                    files={rel: sha256_file(os.path.join(directory, rel))
                           for rel in _files(directory)})
    with open(os.path.join(directory, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return manifest


def read(directory: str) -> dict:
    """The manifest of an export directory, unverified (`verify` checks the files)."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isdir(directory):
        raise ExportError(f"{directory}: no such export directory")
    if not os.path.exists(path):
        raise ExportError(f"{path} not found: {directory} is not an mlctr export "
                          "(or its export did not finish)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ExportError(f"{path}: not an mlctr export manifest (no 'files')")
    if manifest.get("manifest_version") != FORMAT_VERSION:
        raise ExportError(f"{path}: manifest_version {manifest.get('manifest_version')!r}, "
                          f"this mlctr reads {FORMAT_VERSION}; export the run again")
    return manifest


def verify(directory: str) -> dict:
    """The manifest, after checking every file against its sha256.

    Raises:
      ExportError: no manifest, or a file missing, added or differing from its sha256.
    """
    manifest = read(directory)
    expected, found = manifest["files"], _files(directory)
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ExportError(f"{directory}: {missing[0]} is missing (listed in {MANIFEST}); "
                          "the export is incomplete: export the run again")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ExportError(f"{directory}: {extra[0]} is not listed in {MANIFEST}; "
                          "the export was changed after it was written: export the run again")
    for rel in found:
        if sha256_file(os.path.join(directory, rel)) != expected[rel]:
            raise ExportError(f"{directory}: {rel} content differs from its sha256 in "
                              f"{MANIFEST} (tampered or damaged): export the run again")
    return manifest
