"""Job ids sort in creation order, are unique, survive a clock that steps back, and are
exactly the text of their 128-bit value (checked against a slow reference encoder)."""

from __future__ import annotations

import base64
import itertools
import random
import re

import pytest

from taquba.core import ids
from taquba.core.ids import IdGenerator

CANONICAL = re.compile(r"[0-9A-HJKMNP-TV-Z]{25}[048CGMRW]")
T = 1_700_000_000.0
_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


def reference(value: int) -> str:
    """The id text of ``value`` the slow, obvious way: base32 of the 16 bytes, unpadded,
    in Crockford's alphabet."""
    raw = base64.b32encode(value.to_bytes(16, "big"))[:26]
    return raw.translate(_TO_CROCKFORD).decode("ascii")


def value_of(text: str) -> int:
    value = ids.decode(text)
    assert value is not None, text
    return value


def test_ids_sort_in_creation_order_and_are_unique() -> None:
    gen = IdGenerator()
    times = [1000.0] * 500 + [1000.001 * k for k in range(1, 500)] + [999.0] * 100
    out = [gen.new(t) for t in times]
    assert out == sorted(out)
    assert len(set(out)) == len(out)
    assert all(CANONICAL.fullmatch(i) for i in out)


def test_later_millisecond_sorts_after_earlier_one_across_generators() -> None:
    a = IdGenerator().new(1_700_000_000.000)
    b = IdGenerator().new(1_700_000_000.001)
    assert a < b


def test_encode_matches_the_reference_encoder_on_random_and_edge_values() -> None:
    rng = random.Random(1234)
    values = [
        0,
        1,
        255,
        256,
        1023,
        1024,
        (1 << 80) - 1,
        1 << 80,
        (1 << 128) - 1,
        (1 << 127),
        (1 << 88) - 1,
        1 << 88,
        (1 << 38) - 1,
        1 << 38,
    ]
    values += [rng.getrandbits(128) for _ in range(20_000)]
    values += [rng.getrandbits(rng.randrange(1, 129)) for _ in range(5_000)]
    for value in values:
        text = ids.encode(value)
        assert text == reference(value), value
        assert ids.decode(text) == value


def test_encode_rejects_values_outside_128_bits() -> None:
    for bad in (-1, 1 << 128):
        with pytest.raises(ValueError):
            ids.encode(bad)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0" * 25,
        "0" * 27,
        "0" * 25 + "1",  # the last digit's two low bits must be clear
        "0" * 25 + "Z",
        "0" * 25 + "_",
        "_" + "0" * 25,
        "+" + "0" * 25,
        "-" + "0" * 25,
        " " + "0" * 25,
        "0" * 24 + " 0",
        "01ARZ3NDEKTSV4RRFFQ69G5FA0".lower(),
        "I" * 26,
        "L" * 26,
        "O" * 26,
        "U" * 26,
        "é" * 26,
        "0" * 12 + "_" + "0" * 13,
    ],
)
def test_decode_accepts_only_canonical_text(text: str) -> None:
    assert ids.decode(text) is None


def test_generator_values_are_milliseconds_then_random_bits() -> None:
    gen = IdGenerator()
    value = value_of(gen.new(T))
    assert value >> 80 == int(T * 1000)


def _forced(last: int) -> IdGenerator:
    """A generator whose previous id had the value ``last`` (to test carries)."""
    gen = IdGenerator()
    gen.new(T)
    gen._last = last
    gen._text = ids.encode(last)
    return gen


@pytest.mark.parametrize(
    "low", [0, 1, 0xFE, 0xFF, 0x1FF, 0x3FF, 0xFFFF, (1 << 38) - 1, (1 << 40) - 1, (1 << 80) - 2]
)
def test_same_millisecond_increments_across_carries(low: int) -> None:
    ms = int(T * 1000)
    gen = _forced(ms << 80 | low)
    before = gen._text
    out = [gen.new(T) for _ in range(600)]
    expected = [reference((ms << 80 | low) + k) for k in range(1, 601)]
    assert out == expected
    assert before < out[0]
    assert out == sorted(out)


def test_random_part_overflow_carries_into_the_time_and_keeps_order() -> None:
    ms = int(T * 1000)
    last = ms << 80 | ((1 << 80) - 1)
    gen = _forced(last)
    a = gen.new(T)
    b = gen.new(T)
    assert a == reference(last + 1) and b == reference(last + 2)
    assert value_of(a) >> 80 == ms + 1
    # The next millisecond has already been used up by the carry: still increments.
    c = gen.new(T + 0.001)
    assert c == reference(last + 3)
    assert reference(last) < a < b < c


def test_new_many_equals_repeated_new_including_carries() -> None:
    ms = int(T * 1000)
    for low in (0, 0x10, 0xFE, 0xFF, 0xFFFF - 300, (1 << 80) - 700):
        for n in (1, 2, 255, 256, 257, 1000):
            a = _forced(ms << 80 | low)
            b = _forced(ms << 80 | low)
            many = a.new_many(T, n)
            one_by_one = [b.new(T) for _ in range(n)]
            assert many == one_by_one, (low, n)
            assert a._last == b._last and a._text == b._text
            # and both keep going the same way
            assert a.new(T) == b.new(T)


def test_new_many_of_a_fresh_millisecond_starts_with_new_random_bits() -> None:
    gen = IdGenerator()
    first = gen.new_many(T, 3)
    later = gen.new_many(T + 1, 3)
    assert value_of(later[0]) >> 80 == int((T + 1) * 1000)
    assert first + later == sorted(first + later)
    assert [value_of(i) for i in later] == [value_of(later[0]) + k for k in range(3)]
    assert gen.new_many(T, 0) == []


def test_clock_stepping_back_keeps_ids_increasing() -> None:
    gen = IdGenerator()
    times = [T, T + 5, T - 100, T - 100, 0.0, -50.0, T + 5, T + 5.001, T + 1]
    out = []
    for t in times:
        out.append(gen.new(t))
        out += gen.new_many(t, 300)
    assert out == sorted(out)
    assert len(set(out)) == len(out)
    values = [value_of(i) for i in out]
    assert all(b > a for a, b in itertools.pairwise(values))


def test_first_id_at_time_zero_or_before_is_well_formed() -> None:
    for t in (0.0, -1.0):
        gen = IdGenerator()
        a, b = gen.new(t), gen.new(t)
        assert CANONICAL.fullmatch(a) and CANONICAL.fullmatch(b)
        assert value_of(a) >> 80 == 0 and a < b


def test_successor_is_the_text_of_the_next_value() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        value = rng.getrandbits(128) - 1
        if value < 0:
            continue
        low_forced = value | rng.choice((0, 0xFF, 0xFFFF))
        for v in (value, low_forced):
            if v + 1 >= 1 << 128:
                continue
            assert ids.successor(reference(v), v + 1) == reference(v + 1)
