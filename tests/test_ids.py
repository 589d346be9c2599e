"""Job ids sort in creation order, are unique, and survive a clock that steps back."""

from __future__ import annotations

import re

from taquba.ids import IdGenerator


def test_ids_sort_in_creation_order_and_are_unique() -> None:
    gen = IdGenerator()
    times = [1000.0] * 500 + [1000.001 * k for k in range(1, 500)] + [999.0] * 100
    ids = [gen.new(t) for t in times]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", i) for i in ids)


def test_later_millisecond_sorts_after_earlier_one_across_generators() -> None:
    a = IdGenerator().new(1_700_000_000.000)
    b = IdGenerator().new(1_700_000_000.001)
    assert a < b
