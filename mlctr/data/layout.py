"""The on-disk format of a prepared dataset, and the helpers that write it.

A prepared dataset is one directory:

    feature_map.json          written last (atomically): its presence marks the
                              directory complete; fields, vocabulary sizes and offsets,
                              protocol, seed, row counts, positive rates, source checksum,
                              skipped-row counts (and, for synthetic data, Bayes metrics)
    train_ids.npy             int32 [n, F] global feature ids, row-major
    train_label.npy           uint8 [n] 0/1 labels
    valid_ids.npy, valid_label.npy, test_ids.npy, test_label.npy
    {split}_true_prob.npy     float32 [n] true click probability (synthetic data only)
    vocab/<field>.npy         int64 sorted keys of the field's ids 1..V (see vocab.py);
                              absent for hashed vocabularies (feature map `vocab.mode`
                              "hash", see hashing.py)
    .lock                     held by a running `prepare` (mlctr.locking)

Columnar-by-split `.npy` files are read with `np.load(mmap_mode="r")`, so a batch is
one vectorised gather from the page cache; there is no per-example record format.

`.npy` files are written in a stream by `NpyWriter`: a fixed 128-byte header is
reserved first and filled in once the row count is known, so no split ever has to be
held in memory.

feature_map.json also records a content checksum of every file (`checksums`): the CRC-32
of each 16 MiB block of each file, and a CRC-32 of the feature map's own other keys.
CRC-32 (zlib) is the cheapest checksum the standard library offers (about 1.4 GB/s on
one core, 2-4x blake2b or sha1) and detects every burst error of up to 32 bits, which
is what bit rot and torn writes produce; it is no defence against deliberate tampering,
which is not what it is for. Per-block sums let `mlctr.data.reader` check a sample of
blocks whenever a dataset is opened and every block on an explicit `verify`.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import zlib

import numpy as np

from mlctr.data.errors import DatasetError

FEATURE_MAP = "feature_map.json"
SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 2  # 2: adds `checksums`; version 1 datasets open without them
READABLE_VERSIONS = (1, 2)
CHECKSUM_BLOCK_BYTES = 1 << 24
_HEADER_BYTES = 128


def ids_path(data_dir: str, split: str) -> str:
    """The int32 [n, F] global ids of a split."""
    return os.path.join(data_dir, f"{split}_ids.npy")


def label_path(data_dir: str, split: str) -> str:
    """The uint8 [n] labels of a split."""
    return os.path.join(data_dir, f"{split}_label.npy")


def true_prob_path(data_dir: str, split: str) -> str:
    """The float32 [n] true click probabilities of a split (synthetic data)."""
    return os.path.join(data_dir, f"{split}_true_prob.npy")


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                 "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    header = buffer.getvalue()
    if len(header) > _HEADER_BYTES:
        raise ValueError(f"npy header for shape {shape} is longer than {_HEADER_BYTES} bytes")
    # Pad to exactly _HEADER_BYTES so the data offset never depends on the row count.
    padding = _HEADER_BYTES - len(header)
    header_len = int.from_bytes(header[8:10], "little") + padding
    return header[:8] + header_len.to_bytes(2, "little") + header[10:-1] + b" " * padding + b"\n"


class NpyWriter:
    """Appends rows to a .npy file whose length is unknown until `close()`.

    Args:
        path: the .npy file to write.
        dtype: element dtype.
        row_shape: shape of one row, () for a vector.
    """

    def __init__(self, path: str, dtype, row_shape: tuple[int, ...] = ()):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.num_rows = 0
        self._file = open(path, "wb")
        self._file.write(b"\0" * _HEADER_BYTES)

    def append(self, rows: np.ndarray) -> None:
        """Appends rows of shape [k, *row_shape] (converted to the dtype)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {rows.shape[1:]}, expected "
                             f"{self.row_shape}")
        self._file.write(rows.data)
        self.num_rows += rows.shape[0]

    def close(self) -> None:
        """Writes the header with the final row count and closes the file."""
        if self._file is None:
            return
        self._file.seek(0)
        self._file.write(_npy_header(self.dtype, (self.num_rows,) + self.row_shape))
        self._file.close()
        self._file = None


def open_rows(path: str) -> np.ndarray:
    """Memory-maps a .npy file read-only (the page cache then serves the reads)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def npy_layout(path: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, data offset) of a C-order .npy file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(f)
        if fortran_order:
            raise ValueError(f"{path}: Fortran-order arrays are not supported")
        return dtype, shape, f.tell()


def read_rows(path: str, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a .npy file, read with plain file reads.

    Unlike a memory map, the pages read do not stay in this process's resident set, so
    streaming through a file keeps the memory bounded.
    """
    dtype, shape, offset = npy_layout(path)
    row_items = int(np.prod(shape[1:], dtype=np.int64))
    stop = min(stop, shape[0])
    count = max(stop - start, 0) * row_items
    rows = np.fromfile(path, dtype=dtype, count=count,
                       offset=offset + start * row_items * dtype.itemsize)
    return rows.reshape((-1,) + tuple(shape[1:]))


def update_rows(path: str, update, *, block_rows: int = 1 << 16, num_threads: int = 1) -> None:
    """Rewrites a .npy file in place, block by block: rows <- update(rows).

    With num_threads > 1 the blocks are shared out among threads (each with its own
    file handle; `update` must be thread-safe, numpy releases the GIL).
    """
    dtype, shape, offset = npy_layout(path)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    starts = range(0, shape[0], block_rows)

    def rewrite(part: int) -> None:
        with open(path, "r+b") as f:
            for start in starts[part::num_threads]:
                count = min(block_rows, shape[0] - start)
                f.seek(offset + start * row_bytes)
                block = np.fromfile(f, dtype=dtype, count=count * row_bytes // dtype.itemsize)
                block = np.ascontiguousarray(
                    update(block.reshape((count,) + tuple(shape[1:]))), dtype=dtype)
                f.seek(offset + start * row_bytes)
                f.write(block.data)

    if num_threads <= 1 or len(starts) <= 1:
        num_threads = 1
        rewrite(0)
        return
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        for done in [pool.submit(rewrite, part) for part in range(num_threads)]:
            done.result()


def write_json_atomic(path: str, obj) -> None:
    """Writes JSON to a temporary file in the same directory, then renames it.

    The file gets the mode every other file gets (0666 less the umask), so other users
    of shared storage can read it.
    """
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def feature_map_path(data_dir: str) -> str:
    """The feature_map.json of a dataset directory."""
    return os.path.join(data_dir, FEATURE_MAP)


def read_feature_map(data_dir: str) -> dict:
    """Loads feature_map.json.

    Raises:
        DatasetError: missing (an incomplete directory), empty or not JSON, not an
            object, or of a format version this code cannot read.
    """
    path = feature_map_path(data_dir)
    if not os.path.exists(path):
        raise DatasetError(path, f"missing: {data_dir} is not a complete prepared dataset; "
                           "run python -m mlctr.data.prepare first", reason="incomplete")
    try:
        with open(path, encoding="utf-8") as f:
            feature_map = json.load(f)
    except UnicodeDecodeError as e:
        raise DatasetError(path, f"not a JSON text file ({e.reason} at byte {e.start}); "
                           "prepare the dataset again", reason="bad_feature_map") from None
    except json.JSONDecodeError as e:
        what = "empty" if not e.doc.strip() else f"not valid JSON ({e.msg} at line {e.lineno} " \
            f"column {e.colno})"
        raise DatasetError(path, f"{what}; prepare the dataset again",
                           reason="bad_feature_map") from None
    if not isinstance(feature_map, dict):
        raise DatasetError(path, f"holds a JSON {type(feature_map).__name__}, not an object; "
                           "prepare the dataset again", reason="bad_feature_map")
    if feature_map.get("format_version") not in READABLE_VERSIONS:
        raise DatasetError(path, f"format_version {feature_map.get('format_version')!r}, "
                           f"expected one of {READABLE_VERSIONS}; prepare the dataset again",
                           reason="format_version")
    return feature_map


# ---------------------------------------------------------------------------
# Checksums.


def dataset_files(feature_map: dict) -> list[str]:
    """The files (relative paths) a prepared dataset consists of, feature map aside."""
    names = []
    for split in SPLITS:
        names += [os.path.basename(ids_path("", split)), os.path.basename(label_path("", split))]
        if "true_prob" in feature_map.get("files", {}).get(split, {}):
            names.append(os.path.basename(true_prob_path("", split)))
    if is_hashed(feature_map):  # hashed vocabularies have no files
        return names
    names += [os.path.join("vocab", f"{field['name']}.npy") for field in feature_map["fields"]]
    return names


def is_hashed(feature_map: dict) -> bool:
    """Whether a dataset's ids are hashed (mlctr.data.hashing), not fitted vocabularies."""
    vocab = feature_map.get("vocab")
    return isinstance(vocab, dict) and vocab.get("mode") == "hash"


def block_checksums(path: str, block_bytes: int, blocks=None) -> dict[int, str]:
    """{block index: CRC-32 (8 hex digits)} of the `blocks` of a file (None: all)."""
    size = os.path.getsize(path)
    count = max(1, -(-size // block_bytes))
    sums = {}
    with open(path, "rb") as f:
        for block in (range(count) if blocks is None else blocks):
            f.seek(block * block_bytes)
            sums[block] = f"{zlib.crc32(f.read(block_bytes)):08x}"
    return sums


def feature_map_checksum(feature_map: dict) -> str:
    """CRC-32 of the feature map's keys other than `checksums`, canonically encoded."""
    rest = {k: v for k, v in feature_map.items() if k != "checksums"}
    return f"{zlib.crc32(json.dumps(rest, sort_keys=True).encode()):08x}"


def compute_checksums(data_dir: str, feature_map: dict) -> dict:
    """The `checksums` entry of a feature map: sizes and block CRC-32s of every file."""
    files = {}
    for name in dataset_files(feature_map):
        path = os.path.join(data_dir, name)
        sums = block_checksums(path, CHECKSUM_BLOCK_BYTES)
        files[name] = {"bytes": os.path.getsize(path), "crc32": [sums[b] for b in sorted(sums)]}
    return {"algorithm": "crc32", "block_bytes": CHECKSUM_BLOCK_BYTES, "files": files,
            "feature_map": feature_map_checksum(feature_map)}
