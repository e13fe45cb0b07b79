"""catalogue: item validation, TF-IDF against hand-computed weights, cosine ranking, blending.

The toy corpus below, with the smooth idf ``ln((1 + N) / (1 + df)) + 1`` and N = 3:

- a: "Red shoes", tag "running"    -> red, shoes, running
- b: "Red red hat"                 -> red (twice), hat
- c: "Blue shoes", category Footwear -> blue, shoes, category:footwear

idf(df=2) = ln(4/3) + 1 = 1.287682, idf(df=1) = ln(2) + 1 = 1.693147. Row a is
(1.287682, 1.287682, 1.693147) / 2.486563, row b (2 * 1.287682, 1.693147) / 3.082054, row c
(1.287682, 1.693147, 1.693147) / 2.718716. Cosines: a.b = 0.517856 * 0.835592 = 0.432716,
a.c = 0.517856 * 0.473630 = 0.245272, b.c = 0 (no shared term).
"""

import math

import pytest

from app.content import ContentIndex, blend, item_tokens, tokenize
from app.models import ItemRecord
from app.serving import CatalogueSnapshot
from app.stores.catalogue import decode_item, encode_item
from app.validation import InvalidEvent, parse_items

A = ItemRecord("a", title="Red shoes", tags=("running",))
B = ItemRecord("b", title="Red red hat")
C = ItemRecord("c", title="Blue shoes", categories=("Footwear",))
AB, AC = 0.432716, 0.245272


def approx(value: float) -> object:
    return pytest.approx(value, abs=1e-6)


def row(index: ContentIndex, item_id: str) -> dict[str, float]:
    """An item's TF-IDF weights by term."""
    terms = {column: term for term, column in index.vocabulary.items()}
    sparse = index.matrix[index.item_positions[item_id]]
    return {terms[column]: value for column, value in zip(sparse.indices, sparse.data, strict=True)}


def test_tokens_are_lowercased_alphanumeric_runs_of_at_least_two_characters():
    assert tokenize("Men's T-Shirt, size XL_2") == ["men", "shirt", "size", "xl"]


def test_a_category_is_one_whole_term_and_the_description_is_not_indexed():
    record = ItemRecord(
        "x", title="Garden hose", description="hose", tags=("green",), categories=("Home & Garden",)
    )
    assert item_tokens(record) == ["garden", "hose", "green", "category:home & garden"]


def test_tf_idf_weights_equal_the_hand_computed_smooth_idf_values():
    index = ContentIndex([A, B, C])
    assert index.idf[index.vocabulary["red"]] == approx(math.log(4 / 3) + 1)
    assert index.idf[index.vocabulary["hat"]] == approx(math.log(2) + 1)
    assert row(index, "a") == {
        "red": approx(0.517856),
        "shoes": approx(0.517856),
        "running": approx(0.680919),
    }
    assert row(index, "b") == {"red": approx(0.835592), "hat": approx(0.549351)}
    assert row(index, "c") == {
        "shoes": approx(0.473630),
        "blue": approx(0.622766),
        "category:footwear": approx(0.622766),
    }


def test_similar_ranks_by_cosine_and_leaves_out_the_item_itself():
    assert ContentIndex([A, B, C]).similar("a", 10) == [("b", approx(AB)), ("c", approx(AC))]


def test_similar_leaves_out_items_sharing_no_term():
    assert ContentIndex([A, B, C]).similar("b", 10) == [("a", approx(AB))]


def test_similar_leaves_out_excluded_ids():
    assert ContentIndex([A, B, C]).similar("a", 10, exclude={"b"}) == [("c", approx(AC))]


def test_similar_of_an_unknown_item_is_empty():
    assert ContentIndex([A, B, C]).similar("nope", 10) == []


def test_similar_stops_at_n():
    assert [item for item, _ in ContentIndex([A, B, C]).similar("a", 1)] == ["b"]


def test_tied_scores_are_ordered_by_item_id():
    twins = [ItemRecord(item_id, title="blue hat") for item_id in ("t3", "t1", "t2")]
    index = ContentIndex([*twins, ItemRecord("q", title="blue hat")])
    assert [item for item, _ in index.similar("q", 2)] == ["t1", "t2"]


def test_a_later_record_of_the_same_item_replaces_the_earlier_one():
    index = ContentIndex([A, ItemRecord("a", title="Blue hat"), B])
    assert set(row(index, "a")) == {"blue", "hat"}


def test_the_profile_is_the_weighted_sum_of_the_users_items_scaled_to_unit_length():
    index = ContentIndex([A, B, C])
    scores = index.profile_scores({"a": 2.0, "c": 1.0})
    # |2a + c| = sqrt(4 + 1 + 4 * a.c) = 2.445626; b's score is 2 * a.b / 2.445626.
    assert scores[index.item_positions["b"]] == approx(0.353869)
    assert scores[index.item_positions["a"]] == approx((2 + AC) / 2.445626)


def test_negative_and_unknown_items_add_nothing_to_the_profile():
    index = ContentIndex([A, B, C])
    assert index.profile_scores({"a": 1.0, "b": -2.0, "zz": 5.0}).tolist() == (
        index.profile_scores({"a": 1.0}).tolist()
    )


def test_a_profile_without_positive_known_items_scores_nothing():
    index = ContentIndex([A, B, C])
    assert not index.profile_scores({"b": -1.0, "zz": 1.0}).any()
    assert index.recommend_for_profile({"b": -1.0, "zz": 1.0}, 10) == []


def test_recommend_for_profile_leaves_out_every_item_the_user_touched():
    index = ContentIndex([A, B, C, ItemRecord("d", title="red scarf")])
    recommended = index.recommend_for_profile({"a": 1.0, "b": -2.0}, 10)
    assert sorted(item for item, _ in recommended) == ["c", "d"]


def test_unavailable_items_are_never_recommended():
    sold_out = ItemRecord("b", title="Red red hat", available=False)
    index = ContentIndex([A, sold_out, C])
    assert index.recommend_for_profile({"a": 1.0}, 10) == [("c", approx(AC))]
    assert index.similar("a", 10) == [("c", approx(AC))]


def test_an_empty_catalogue_recommends_nothing():
    index = ContentIndex([])
    assert index.recommend_for_profile({"a": 1.0}, 10) == []


def test_blend_adds_min_max_scaled_scores_with_the_content_weight():
    content = [("x", 0.9), ("y", 0.5), ("z", 0.1)]  # scaled: x 1, y 0.5, z 0
    popular = [("y", 10.0), ("w", 6.0), ("x", 2.0)]  # scaled: y 1, w 0.5, x 0
    # x: 0.7 * 1 + 0.3 * 0 = 0.7; y: 0.7 * 0.5 + 0.3 * 1 = 0.65; w: 0.3 * 0.5; z: 0
    assert blend(content, popular, 0.7, 3) == [
        ("x", approx(0.7)),
        ("y", approx(0.65)),
        ("w", approx(0.15)),
    ]


def test_blend_breaks_ties_by_first_appearance_content_first():
    # A one-item list scales to 1.0, so all three items tie at 0.5.
    assert blend([("c", 0.3)], [("p", 7.0), ("q", 7.0)], 0.5, 10) == [
        ("c", 0.5),
        ("p", 0.5),
        ("q", 0.5),
    ]


def test_blend_rejects_a_content_weight_outside_zero_to_one():
    with pytest.raises(ValueError, match="content_weight"):
        blend([], [], 1.5, 10)


def item(**fields):
    return {"item_id": "i1", "title": "Red shoes", **fields}


def test_a_single_item_is_parsed_with_defaults_for_missing_fields():
    assert parse_items({"item_id": "i1"}, 100, 256) == [ItemRecord("i1")]


def test_a_batch_of_items_is_parsed_in_order():
    records = parse_items({"items": [item(item_id="a"), item(item_id="b")]}, 100, 256)
    assert [record.item_id for record in records] == ["a", "b"]


def test_unknown_item_fields_are_ignored():
    [record] = parse_items(item(price=9.5, brand="acme"), 100, 256)
    assert record == ItemRecord("i1", title="Red shoes")


def test_all_fields_are_parsed_and_duplicate_labels_dropped():
    [record] = parse_items(
        item(
            description="Light.\nFor trails.",
            categories=["Shoes", "Sport"],
            tags=["red", "trail", "red"],
            available=False,
        ),
        100,
        256,
    )
    assert record == ItemRecord(
        "i1", "Red shoes", "Light.\nFor trails.", ("Shoes", "Sport"), ("red", "trail"), False
    )


@pytest.mark.parametrize(
    ("bad", "field", "problem"),
    [
        ({"title": "x"}, "item_id", "is required"),
        (item(item_id="x" * 257), "item_id", "is 257 characters long, the maximum is 256"),
        (item(title=5), "title", "must be a string, got int"),
        (
            item(description="x" * 2001),
            "description",
            "is 2001 characters long, the maximum is 2000",
        ),
        (item(title="a\x00b"), "title", "has a control or invalid character U+0000 at 1"),
        (item(tags="red"), "tags", "must be a list of strings, got str"),
        (item(tags=["ok", 3]), "tags[1]", "must be a string, got int"),
        (item(categories=["x" * 65]), "categories[0]", "is 65 characters long, the maximum is 64"),
        (item(categories=[" "]), "categories[0]", "must not be empty"),
        (item(tags=[f"t{n}" for n in range(51)]), "tags", "holds 51 entries, the maximum is 50"),
        (item(available="yes"), "available", "must be true or false, got str"),
        (item(hidden_until="soon"), "hidden_until", "is not ISO-8601 or unix seconds: 'soon'"),
        (item(hidden_until=float("inf")), "hidden_until", "is not a finite number"),
        ("i1", "item", "must be a JSON object, got str"),
        ({"items": {}}, "items", "must be a list, got dict"),
        ({"items": []}, "items", "must hold at least one item"),
        ({"items": [item()] * 3}, "items", "holds 3 items, the maximum per request is 2"),
    ],
)
def test_an_invalid_item_names_its_field_and_problem(bad, field, problem):
    with pytest.raises(InvalidEvent) as raised:
        parse_items(bad, 2, 256)
    assert (raised.value.field, raised.value.problem) == (field, problem)


def test_an_invalid_item_in_a_batch_names_its_index():
    with pytest.raises(InvalidEvent) as raised:
        parse_items({"items": [item(), item(), item(tags=[None])]}, 100, 256)
    assert raised.value.as_dict() == {"index": 2, "field": "tags[0]", "problem": "is required"}


def test_hidden_until_is_read_as_unix_seconds_or_iso_8601():
    [seconds, iso] = parse_items(
        {"items": [item(hidden_until=1_800_000_000), item(hidden_until="2027-01-15T00:00:00Z")]},
        100,
        256,
    )
    assert (seconds.hidden_until, iso.hidden_until) == (1_800_000_000.0, 1_799_971_200.0)


def test_an_item_hidden_until_later_is_withheld_until_then_and_shown_after():
    catalogue = CatalogueSnapshot.of([ItemRecord("a"), ItemRecord("b", hidden_until=100.0)], 1)
    listed = [("a", 2.0), ("b", 1.0)]

    assert catalogue.withheld(99.0) == {"b"} and catalogue.withheld(100.0) == frozenset()
    assert catalogue.visible(listed, now=99.0) == [("a", 2.0)]
    assert catalogue.visible(listed, now=100.5) == listed


def test_a_record_survives_its_json_form():
    record = ItemRecord("i1", "Red", "Light", ("Shoes",), ("red", "trail"), False, 1_800_000_000.0)
    assert decode_item(encode_item(record)) == record


def test_a_stored_record_missing_newer_fields_takes_their_defaults():
    assert decode_item(b'{"item_id": "i1", "title": "Red"}') == ItemRecord("i1", title="Red")
