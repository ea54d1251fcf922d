"""Copies the default run's results table into README.md.

    python -m mlctr.tools.readme_table [--results=runs/default/results.md] [--readme=README.md]

`bash launch.sh` writes its table to runs/default/results.md; this command replaces the
README's block between the two markers below with that file, so the README shows what the
current code prints. `--check` exits 1 (one line) when the README's block differs instead.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags

BEGIN = "<!-- default-run:begin (python -m mlctr.tools.readme_table) -->"
END = "<!-- default-run:end -->"

_RESULTS = flags.DEFINE_string("results", "runs/default/results.md",
                               "the default run's table, as the study writes it")
_README = flags.DEFINE_string("readme", "README.md", "the README to update")
_CHECK = flags.DEFINE_bool("check", False, "only report whether the README is up to date")


class ReadmeTableError(ValueError):
    """The README or the results file is not what this tool expects."""


def block_span(readme: str, path: str = "README.md") -> tuple[int, int]:
    """Start and end offsets of the text between the markers (markers excluded)."""
    begin, end = readme.find(BEGIN), readme.find(END)
    if begin < 0 or end < 0 or end < begin:
        raise ReadmeTableError(f"{path}: no '{BEGIN}' ... '{END}' block")
    return begin + len(BEGIN), end


def table_block(readme: str, path: str = "README.md") -> str:
    """The README's current default-run block."""
    start, end = block_span(readme, path)
    return readme[start:end].strip("\n")


def replace_block(readme: str, results: str, path: str = "README.md") -> str:
    """README text with the block between the markers replaced by `results`."""
    start, end = block_span(readme, path)
    return readme[:start] + "\n" + results.strip("\n") + "\n" + readme[end:]


def main(argv):
    del argv
    try:
        with open(_RESULTS.value, encoding="utf-8") as f:
            results = f.read()
    except OSError as e:
        sys.exit(f"mlctr.tools.readme_table: cannot read {_RESULTS.value} ({e.strerror}); "
                 "run `bash launch.sh` first")
    with open(_README.value, encoding="utf-8") as f:
        readme = f.read()
    try:
        updated = replace_block(readme, results, _README.value)
    except ReadmeTableError as e:
        sys.exit(f"mlctr.tools.readme_table: {e}")
    if _CHECK.value:
        if updated != readme:
            sys.exit(f"{_README.value}: the default-run table differs from {_RESULTS.value}")
        print(f"{_README.value}: up to date with {_RESULTS.value}")
        return
    with open(_README.value, "w", encoding="utf-8") as f:
        f.write(updated)
    print(f"{_README.value}: default-run table copied from {_RESULTS.value}")


if __name__ == "__main__":
    app.run(main)
