"""The commit summary's counting, against a brute-force count on random histories."""

import random

import pytest

from backend.codec import pretty_row
from backend.diff import _key_by, _key_values, _numbered, compare_rows, merge_rows


def _history(seed: int) -> tuple[list[bytes], list[bytes], tuple[int, int, int]]:
    rng = random.Random(seed)
    old = {k: rng.randrange(3) for k in rng.sample(range(200), rng.randrange(0, 120))}
    new = dict(old)
    for key in list(new):
        roll = rng.random()
        if roll < 0.2:
            del new[key]
        elif roll < 0.4:
            new[key] += 10
    for key in rng.sample(range(200, 260), rng.randrange(0, 30)) + rng.sample(range(200), 20):
        new.setdefault(key, 0)
    truth = (
        len(new.keys() - old.keys()),
        len(old.keys() - new.keys()),
        sum(1 for k in old.keys() & new.keys() if old[k] != new[k]),
    )

    def rows(table: dict[int, int]) -> list[bytes]:
        return [pretty_row({"id": k, "v": v}) for k, v in sorted(table.items())]

    return rows(old), rows(new), truth


@pytest.mark.parametrize("seed", range(40))
def test_merge_and_pending_match_agree_with_a_brute_force_count(seed):
    old, new, (added, deleted, changed) = _history(seed)
    merged = merge_rows(old, new, _key_values(["id"]))
    matched = compare_rows(old, new, _key_by(["id"]))
    for change in (merged, matched):
        assert (change.added, change.deleted, change.changed) == (added, deleted, changed)


def test_duplicate_rows_of_a_keyless_table_are_counted_one_by_one():
    row = pretty_row({"x": 1})
    other = pretty_row({"x": 2})
    change = merge_rows(
        _numbered(iter([row, row, other])), _numbered(iter([row, row, row])), lambda r: r
    )
    assert (change.added, change.deleted, change.changed) == (1, 1, 0)


def test_a_key_whose_order_python_cannot_see_still_counts_right():
    # Decimal keys as strings: "10.0" sorts before "9.5" as text, after it as a number.
    old = [pretty_row({"k": "9.5", "v": 1}), pretty_row({"k": "10.0", "v": 1})]
    new = [
        pretty_row({"k": "9.5", "v": 2}),
        pretty_row({"k": "10.0", "v": 1}),
        pretty_row({"k": "11.0", "v": 1}),
    ]
    change = compare_rows(old, new, _key_by(["k"]))
    assert (change.added, change.deleted, change.changed) == (1, 0, 1)
