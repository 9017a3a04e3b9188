import csv
import io

import pytest

from liverseg_monai.io.tables import table_columns, table_text, write_table


def test_columns_in_first_seen_order():
    assert table_columns([{"b": 1, "a": 2}, {"c": 3, "a": 4}]) == ["b", "a", "c"]


def test_same_text_as_csv_dictwriter():
    rows = [{"case": "a", "dice": 0.5, "note": None}, {"case": "b,c", "hd95": 3.25}]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["case", "dice", "note", "hd95"])
    writer.writeheader()
    writer.writerows(rows)
    assert table_text(rows) == buf.getvalue()


def test_given_columns_sequence_rows_and_extras():
    assert table_text([["liver", 3]], ["class", "pixels"], lineterminator="\n") == "class,pixels\nliver,3\n"
    assert table_text([], ["case"]) == "case\r\n"
    assert table_text([{"case": "a", "x": 1}], ["case"], extra="ignore") == "case\r\na\r\n"
    with pytest.raises(ValueError, match="not among the columns"):
        table_text([{"case": "a", "x": 1}], ["case"])
    with pytest.raises(ValueError, match="need their columns"):
        table_text([["a"]])
    with pytest.raises(ValueError, match="2 values for 1 columns"):
        table_text([["a", 1]], ["case"])


def test_write_table_is_atomic_and_creates_the_folder(tmp_path):
    path = write_table(tmp_path / "sub" / "t.csv", [{"case": "a"}])
    assert path.read_bytes() == b"case\r\na\r\n"
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]  # no temporary file left
