"""The README's default-run table: the columns the study writes, kept by mlctr.tools.readme_table."""
import os

import pytest

from mlctr import report
from mlctr import study
from mlctr.tools import readme_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _header_cells(markdown: str) -> list[str]:
    """Cells of the first markdown table header line in `markdown`."""
    line = next(line for line in markdown.splitlines() if line.startswith("|"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_readme_table_has_the_columns_the_study_writes():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        block = readme_table.table_block(f.read())
    study_header = _header_cells(report.markdown_table([], study.TABLE_COLUMNS))
    assert _header_cells(block) == study_header


def test_replace_block_swaps_only_the_marked_text():
    readme = f"intro\n{readme_table.BEGIN}\nold table\n{readme_table.END}\noutro\n"
    updated = readme_table.replace_block(readme, "| a |\n|---|\n| 1 |\n")
    assert updated == f"intro\n{readme_table.BEGIN}\n| a |\n|---|\n| 1 |\n{readme_table.END}\noutro\n"
    assert readme_table.table_block(updated) == "| a |\n|---|\n| 1 |"


def test_missing_markers_are_one_clear_error():
    with pytest.raises(readme_table.ReadmeTableError, match="README.md: no"):
        readme_table.table_block("no markers here")
