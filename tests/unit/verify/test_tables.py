"""verify.tables: fixed-width text tables pad every column to its widest cell; Markdown tables
have one header rule cell per column."""

from __future__ import annotations

import pytest

from bridge.verify.tables import markdown_table, table


def test_text_table_pads_each_column_to_its_widest_cell() -> None:
    got = table(["a", "name"], [["long-cell", "x"], ["b", "yy"]]).splitlines()
    assert got == [
        "a          name",
        "---------  ----",
        "long-cell  x   ",
        "b          yy  ",
    ]
    assert len({len(line) for line in got}) == 1


def test_text_table_with_no_rows_is_header_and_rule() -> None:
    assert table(["mode", "dB"], []) == "mode  dB\n----  --"


def test_text_table_formats_non_strings() -> None:
    assert table(["n"], [[12345]]).splitlines()[2] == "12345"


def test_text_table_refuses_a_row_of_the_wrong_width() -> None:
    with pytest.raises(ValueError):
        table(["a", "b"], [["only one"]])


def test_markdown_table_rows_and_rule() -> None:
    got = markdown_table(["pair", "SQNR dB"], [["ort ⇄ tflite", 61.5], ["torch ⇄ ort", "140.0"]])
    assert got.splitlines() == [
        "| pair | SQNR dB |",
        "|---|---|",
        "| ort ⇄ tflite | 61.5 |",
        "| torch ⇄ ort | 140.0 |",
    ]


def test_markdown_table_escapes_a_pipe_inside_a_cell() -> None:
    """A failed mode's error in the modes table may quote `pow(|x|, p)` (unsupported.py's LpPool
    advice): an unescaped pipe would split the cell and shift the row's columns."""
    got = markdown_table(["mode", "result"], [["int8", "ERROR: write it as pow(|x|, p)"]])
    row = got.splitlines()[2]
    assert row == r"| int8 | ERROR: write it as pow(\|x\|, p) |"
    assert row.replace(r"\|", "").count("|") == 3
