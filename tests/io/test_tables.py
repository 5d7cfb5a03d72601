import pytest

from trainlock.io.tables import markdown_table


def test_plain_table():
    assert markdown_table(["a", "b"], [[1, 2.5], ["x", None]]) == ("| a | b |\n|---|---|\n| 1 | 2.5 |\n| x | None |")


def test_no_rows_is_the_header_alone():
    assert markdown_table(("only",), []) == "| only |\n|---|"


def test_rows_may_be_any_iterable_of_sequences():
    rows = ((str(i), i * i) for i in range(2))
    assert markdown_table(["n", "n^2"], rows).splitlines()[2:] == ["| 0 | 0 |", "| 1 | 1 |"]


def test_empty_cells_keep_their_column():
    assert markdown_table(["a", "b", "c"], [["", "y", ""]]).splitlines()[-1] == "|  | y |  |"


@pytest.mark.parametrize(
    "align, rule",
    [
        ("lrc", "|:---|---:|:---:|"),
        (["left", "right", "center"], "|:---|---:|:---:|"),
        ([None, "r", "-"], "|---|---:|---|"),
    ],
)
def test_alignment(align, rule):
    assert markdown_table(["a", "b", "c"], [[1, 2, 3]], align=align).splitlines()[1] == rule


def test_a_cell_cannot_break_the_table():
    table = markdown_table(["attack", "note"], [["`a|b`", "two\nlines"]])
    assert table.splitlines()[2] == "| `a\\|b` | two lines |"
    assert len(table.splitlines()) == 3


@pytest.mark.parametrize(
    "headers, rows, align, match",
    [
        (["a", "b"], [[1]], None, "row 0 has 1 cells for 2 columns"),
        (["a", "b"], [[1, 2], [1, 2, 3]], None, "row 1 has 3 cells"),
        (["a", "b"], [], "l", "1 alignments for 2 columns"),
        (["a"], [], "x", "unknown alignment 'x'"),
        ([], [], None, "no columns"),
    ],
)
def test_bad_shapes_are_refused(headers, rows, align, match):
    with pytest.raises(ValueError, match=match):
        markdown_table(headers, rows, align=align)
