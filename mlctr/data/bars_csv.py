"""BARS x1 csv datasets (and a user's own csv): already split, with a header, one id per value.

BARS (https://github.com/reczoo/BARS, data from https://github.com/reczoo/Datasets)
publishes its x1 datasets as three csv files, `train.csv`, `valid.csv` and `test.csv`,
each with a header line naming the columns. The feature definitions below are those of
the BARS dataset configs (FuxiCTR `feature_cols` / `label_col`, `min_categr_count: 1`):

    frappe_x1     label; user, item, daytime, weekday, isweekend, homework, cost,
                  weather, country, city (10 categorical)
    movielens_x1  MovielensLatest_x1: label; user_id, item_id, tag_id (3 categorical)
    criteo_x1     label; I1..I13 (numeric), C1..C26 (categorical)
    avazu_x1      label; feat_1..feat_22 (22 categorical)

Preprocessing follows BARS: the vocabulary of each field is fitted on train.csv (values
seen at least `min_count` times, 1 for every x1 dataset), every other value and the
empty string map to the field's OOV id, and the given split is kept as it is. One
deviation: mlctr's models embed ids only, so a numeric column (criteo_x1's I1..I13,
already normalised in the x1 files) is used as a categorical field of its text values,
where FuxiCTR scales one embedding per field by the number.

A user's own dataset is the same layout with a feature spec (`CsvFormat.from_spec`):

    {"label": "clicked", "fields": ["user", "item", {"name": "price", "type": "numeric"}],
     "min_count": 2}

Labels may be written 0/1 or 0.0/1.0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re

import numpy as np

from mlctr.data import parsing
from mlctr.data.errors import DataError

SPLIT_FILES = ("train", "valid", "test")
_LABEL_KEYS = {parsing.string_key(text): int(text[0]) for text in ("0", "1", "0.0", "1.0")}


# A field name becomes a file name (vocab/<name>.npy): one path component of plain
# characters, so a spec can never make prepare write outside the dataset.
_FIELD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def _check_field_name(name: str, where: str) -> None:
    """DataError unless `name` is a safe file name (no '/', '..', leading '.', spaces)."""
    if not _FIELD_NAME.fullmatch(name) or len(name) > 128:
        raise DataError(where, f"field name {name!r} is not allowed: a field name is used as "
                        "a file name (vocab/<name>.npy), so it must be letters, digits, '_', "
                        "'.' or '-', not start with '.', and be at most 128 characters",
                        reason="bad_spec")


@dataclasses.dataclass(frozen=True)
class CsvFormat:
    """The columns of a csv dataset and how prepare treats them.

    Attributes:
        name: the dataset kind, e.g. "frappe_x1" or "csv".
        label: the label column.
        field_names: the feature columns, in output field order.
        field_kinds: "categorical" or "numeric" per field (both are embedded as ids).
        min_count: train occurrences a value needs to get its own id.
    """

    name: str
    label: str
    field_names: tuple[str, ...]
    field_kinds: tuple[str, ...]
    min_count: int = 1

    # The attributes prepare reads from a raw-format module.
    @property
    def NAME(self) -> str:  # noqa: N802 (the raw-format module interface)
        return self.name

    @property
    def FIELD_NAMES(self) -> list[str]:  # noqa: N802
        return list(self.field_names)

    @property
    def FIELD_KINDS(self) -> list[str]:  # noqa: N802
        return list(self.field_kinds)

    @property
    def MISSING_KEYS(self) -> list[int]:  # noqa: N802
        return [0] * len(self.field_names)  # the empty string: always OOV

    def to_json(self) -> dict:
        """The spec as recorded in feature_map.json (from_spec reads it back)."""
        return {"label": self.label, "min_count": self.min_count,
                "fields": [{"name": n, "type": k}
                           for n, k in zip(self.field_names, self.field_kinds)]}

    @classmethod
    def from_spec(cls, spec, name: str = "csv") -> "CsvFormat":
        """A user's csv format from a feature spec (a dict, or the path of a JSON file).

        Raises:
            DataError: the spec file is missing, not JSON, or not of the documented form.
        """
        where = spec if isinstance(spec, str) else "feature spec"
        if isinstance(spec, str):
            try:
                with open(spec, encoding="utf-8") as f:
                    spec = json.load(f)
            except FileNotFoundError:
                raise DataError(where, "no such file", reason="missing_file") from None
            except OSError as e:  # a directory, no permission
                raise DataError(where, f"cannot read the feature spec: {e.strerror or e} "
                                "(expected a JSON file)", reason="bad_spec") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(where, f"not valid JSON ({e})", reason="bad_spec") from None
        return cls._parse_spec(spec, name, where)

    @classmethod
    def _parse_spec(cls, spec, name: str, where: str) -> "CsvFormat":
        if not isinstance(spec, dict) or not isinstance(spec.get("label"), str) or \
                not isinstance(spec.get("fields"), list) or not spec["fields"]:
            raise DataError(where, 'expected {"label": <column>, "fields": [<column> or '
                            '{"name": <column>, "type": "categorical"|"numeric"}, ...], '
                            '"min_count": <int, optional>}', reason="bad_spec")
        names, kinds = [], []
        for field in spec["fields"]:
            field = {"name": field} if isinstance(field, str) else field
            kind = field.get("type", "categorical") if isinstance(field, dict) else None
            if kind not in ("categorical", "numeric") or not isinstance(field.get("name"), str):
                raise DataError(where, f"bad field {field!r}: expected a column name or "
                                '{"name": ..., "type": "categorical"|"numeric"}',
                                reason="bad_spec")
            _check_field_name(field["name"], where)
            names.append(field["name"])
            kinds.append(kind)
        min_count = spec.get("min_count", 1)
        if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
            raise DataError(where, f"min_count {min_count!r} is not a positive integer",
                            reason="bad_spec")
        if len(set(names)) != len(names) or spec["label"] in names:
            raise DataError(where, "a column is listed twice (or is also the label)",
                            reason="bad_spec")
        return cls(name, spec["label"], tuple(names), tuple(kinds), min_count)

    def reader(self, path: str, *, labeled: bool | None = None) -> "CsvReader":
        """A parser of the csv file `path`, its columns found from the file's header."""
        return CsvReader(self, path, read_header(path), labeled)


def _categorical(names) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(names), ("categorical",) * len(names)


FORMATS = {
    "frappe_x1": CsvFormat("frappe_x1", "label", *_categorical(
        ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather",
         "country", "city"])),
    "movielens_x1": CsvFormat("movielens_x1", "label",
                              *_categorical(["user_id", "item_id", "tag_id"])),
    "criteo_x1": CsvFormat("criteo_x1", "label",
                           tuple([f"I{i}" for i in range(1, 14)] +
                                 [f"C{i}" for i in range(1, 27)]),
                           ("numeric",) * 13 + ("categorical",) * 26),
    "avazu_x1": CsvFormat("avazu_x1", "label",
                          *_categorical([f"feat_{i}" for i in range(1, 23)])),
}


def split_file(directory: str, split: str) -> str:
    """The csv file of a split in a dataset directory: <split>.csv or <split>.csv.gz."""
    plain = os.path.join(directory, f"{split}.csv")
    if not os.path.exists(plain) and os.path.exists(plain + ".gz"):
        return plain + ".gz"
    return plain


def read_header(path: str) -> list[str]:
    """The column names in the first line of a (plain or gzip) csv file."""
    with contextlib.closing(parsing.RawFile(path, chunk_bytes=1 << 16).chunks()) as chunks:
        first = next(chunks)
    line = first.data[:first.data.index(b"\n")].rstrip(b"\r")
    return line.decode("utf-8", errors="replace").split(",")


class CsvReader:
    """Parses chunks of one csv file of a CsvFormat (the `parse_chunk` of prepare).

    Args:
        csv_format: the dataset's columns.
        path: the file (for messages).
        header: its column names.
        labeled: whether the file must have the label column; None: if the header has it.

    Raises:
        DataError: a column of the format is missing from the header.
    """

    def __init__(self, csv_format: CsvFormat, path: str, header: list[str],
                 labeled: bool | None = None):
        self.header = header
        self.labeled = csv_format.label in header if labeled is None else labeled
        needed = list(csv_format.field_names) + ([csv_format.label] if self.labeled else [])
        missing = [name for name in needed if name not in header]
        if missing or len(set(header)) != len(header):
            detail = (f"no column {missing[0]!r} in the header" if missing
                      else "a column name appears twice in the header")
            raise DataError(path, f"{detail} ({','.join(header)[:200]})", line=1,
                            reason="bad_header")
        self.label_column = header.index(csv_format.label) if self.labeled else None
        self.field_columns = [header.index(name) for name in csv_format.field_names]

    def parse_chunk(self, path: str, chunk: parsing.RawChunk) -> parsing.ParsedChunk:
        """Keys int64 [n, F] (the text of each value, see parsing.string_keys), labels."""
        if chunk.first_line == 1:  # drop the header line
            end = chunk.data.index(b"\n")
            chunk = parsing.RawChunk(chunk.data[end + 1:], 2, chunk.num_lines - 1,
                                     chunk.missing_final_newline)
        lines = parsing.split_lines(chunk, b",", len(self.header))
        n = len(lines.line_numbers)
        problems = parsing.RowProblems.empty(n)
        buf, starts, lengths = lines.buf, lines.starts, lines.lengths
        labels = np.zeros(n, np.uint8)
        if self.labeled:
            c = self.label_column
            keys = parsing.string_keys(buf, starts[c], lengths[c])
            ok = np.isin(keys, list(_LABEL_KEYS))
            labels = np.isin(keys, [k for k, v in _LABEL_KEYS.items() if v == 1]).astype(
                np.uint8)
            problems.flag(~ok, c, "bad_label", lambda v: f"label {v!r} is not 0 or 1")
        columns = np.array(self.field_columns)
        keys = parsing.string_keys(buf, starts[columns], lengths[columns])
        return parsing.assemble(path, lines, problems, keys, labels, self.header)
