"""Streaming, vectorised parsing of delimited raw CTR files (plain or gzip).

The raw Criteo and Avazu files are tens of GB of short text lines, so nothing here
loops over rows in Python. One module per step, in the order a chunk goes through:

* `stream`: `RawFile` reads whole-line chunks in a background thread (line numbers,
  SHA-256 of the bytes on disk); `ordered_map` parses chunks in threads, in order.
* `lines`: `split_lines`, the tokenizer: every field's byte offset and length in one
  numpy scan, lines with a wrong column count set aside.
* `values`: `string_keys` (exact int64 keys of short strings), `parse_ints` (SWAR
  decimal integers), `parse_labels`.
* `rows`: `RowProblems` and `assemble`: bad rows flagged, counted by reason and
  reported as one `DataError` naming file, line and column.

Format-specific conversion (`mlctr.data.criteo`, `mlctr.data.avazu`) builds on these;
their names are all importable from here (`from mlctr.data import parsing`).
"""

from mlctr.data.parsing.lines import PAD, SplitLines, split_lines
from mlctr.data.parsing.rows import ParsedChunk, RowProblems, assemble
from mlctr.data.parsing.stream import (DEFAULT_CHUNK_BYTES, RawChunk, RawFile, background,
                                       ordered_map)
from mlctr.data.parsing.values import (decode_string_key, hash_string_key, parse_ints,
                                       parse_labels, string_key, string_keys)

__all__ = ["DEFAULT_CHUNK_BYTES", "PAD", "ParsedChunk", "RawChunk", "RawFile", "RowProblems",
           "SplitLines", "assemble", "background", "decode_string_key", "hash_string_key",
           "ordered_map", "parse_ints", "parse_labels", "split_lines", "string_key",
           "string_keys"]
