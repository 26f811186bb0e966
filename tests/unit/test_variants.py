"""Variant keys (RFC 9111 §4.1): which stored variant a request selects."""

from __future__ import annotations

import pytest

from proxy.core.variants import ANY, is_variant, target_url, variant_key, vary_names

URL = "http://o/v.mp4"


@pytest.mark.parametrize(("vary", "names"), [
    (None, None), ("Origin", ("origin",)), ("Origin, Accept-Language", ("accept-language", "origin")),
    ("accept-language,ORIGIN, origin", ("accept-language", "origin")), ("*", ANY), ("Origin, *", ANY),
    # Fields every fetch of the cache sets to its own values make no variant.
    ("Accept-Encoding", None), ("Range, Origin", ("origin",)), ("", None),
])
def test_vary_names(vary: str | None, names: tuple[str, ...] | None) -> None:
    assert vary_names({"Vary": vary} if vary is not None else {}) == names


def test_the_same_values_select_the_same_variant_and_others_another() -> None:
    names = ("accept-language", "origin")
    a = variant_key(URL, names, [("Origin", "https://a"), ("Accept-Language", "fr, en")])
    assert a == variant_key(URL, names, [("accept-language", "fr,en"), ("ORIGIN", "https://a")])
    assert a == variant_key(URL, names, [("Accept-Language", "fr"), ("Accept-Language", "en"), ("Origin", "https://a")])
    assert a != variant_key(URL, names, [("Origin", "https://b"), ("Accept-Language", "fr, en")])
    # Absent is not empty, and unrelated fields do not count.
    absent = variant_key(URL, names, [("Origin", "https://a")])
    assert absent != variant_key(URL, names, [("Origin", "https://a"), ("Accept-Language", "")])
    assert absent == variant_key(URL, names, [("Origin", "https://a"), ("User-Agent", "x")])


def test_a_variant_key_stands_for_its_url() -> None:
    key = variant_key(URL, ("origin",), [])
    assert is_variant(key) and not is_variant(URL)
    assert target_url(key) == URL and target_url(URL) == URL
