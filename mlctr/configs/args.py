"""The one convention of a config file's argument, `--config=FILE:ARG`.

ARG is `key=value` pairs joined by `:`, each key one that the file names; a value
without a key sets the file's first key. So `default.py:peers=deepfm*4`,
`bars.py:criteo` (= `bars.py:dataset=criteo`) and `bars.py:avazu:peers=deepfm+dcn`
read alike. A file that builds on another passes the keys it does not own on
(`tiny.py:peers=...` is default.py's `peers`). A key the file does not name, or a key
given twice, is a ValueError naming the file and the keys it takes.
"""
from __future__ import annotations


def parse(arg: str | None, path: str, keys: dict[str, str]) -> dict[str, str]:
    """The `key=value` pairs of a config argument.

    Args:
        arg: the text after the file's `:` (None or empty: no pairs).
        path: the config file, for the error message (e.g. 'mlctr/configs/bars.py').
        keys: the keys the file takes, in order, each with what its value is (for the
            error message); the first also takes a bare value.

    Returns:
        {key: value} for the keys given (stripped of spaces).
    """
    names = list(keys)
    expected = ", ".join(f"{k}={v}" for k, v in keys.items())
    values: dict[str, str] = {}
    for part in (arg or "").split(":"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = (key.strip(), value.strip()) if sep else (names[0], key.strip())
        if key not in keys or not value or key in values:
            raise ValueError(f"{path}: bad config argument {part!r} in {arg!r}; expected "
                             f"{expected} joined by ':' (e.g. {names[0]}=...)")
        values[key] = value
    return values
