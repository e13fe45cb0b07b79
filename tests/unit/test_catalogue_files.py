"""Catalogue CSVs as ``load-items`` reads them: the POST /items form of each row."""

import pytest

from app.datasets import DatasetError, iter_items


def test_a_row_becomes_an_item_with_only_the_columns_it_fills(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,title,tags\n a1 ,Jug,blue| enamel\na2,,\n")

    assert list(iter_items(path)) == [
        {"item_id": "a1", "title": "Jug", "tags": ["blue", "enamel"]},
        {"item_id": "a2"},
    ]


def test_a_file_without_an_item_id_column_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("sku,title\na1,Jug\n")

    with pytest.raises(DatasetError, match=rf"{path}: a catalogue CSV needs an item_id column"):
        list(iter_items(path))
