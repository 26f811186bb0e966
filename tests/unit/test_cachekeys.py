"""The query part of a cache key (proxy.core.cachekeys): which pieces a rule keeps, in which order, and its config."""

from __future__ import annotations

from typing import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.cachekeys import PRESETS, QueryRule, parse_query_rule
from proxy.core.config_error import ConfigError
from proxy.core.signatures import SIGNATURE_PARAMS, param_name

WHERE = "origins.media.cache_key"
SIGNED = QueryRule(presets=("signed-urls",))

S3_TARGET = ("/bucket/video.mp4?response-content-type=video%2Fmp4&X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
             "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
CF_TARGET = ("/image.jpg?color=red&size=medium&Expires=1357034400&Signature=nitfHRCrtziwO2HwPfWw~yYDhUF5E"
             "&Key-Pair-Id=K2JCJMDEHXQW5F")
GCS_TARGET = ("/example-bucket/cat.jpeg?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=example%40example"
              "-project.iam.gserviceaccount.com%2F20181026%2Fus-central1%2Fstorage%2Fgoog4_request"
              "&X-Goog-Date=20181026T181309Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host&generation=3"
              "&X-Goog-Signature=247a2aa45f169edf4d187d54e7cc46e4731b1e6273242c4f4c39a1d2507a0e58706e25e3a")


def test_nothing_configured_is_identity_even_for_odd_targets() -> None:
    rule = QueryRule()
    assert rule.identity
    for target in ("/a?b=2&a=1", "/a?", "/a?x=1&&y=2&", "/a", "/%zz?%zz=%", "http://h/a?q"):
        assert rule.key_target(target) == target


@pytest.mark.parametrize("rule", [
    QueryRule(drop=True), QueryRule(sort=True), QueryRule(ignore=("a",)), QueryRule(only=("a",)),
    QueryRule(only=()), SIGNED,
])
def test_anything_configured_is_not_identity(rule: QueryRule) -> None:
    assert not rule.identity


def test_drop_keeps_only_the_path() -> None:
    rule = QueryRule(drop=True)
    assert rule.key_target("/a/b.mp4?x=1&y=2") == "/a/b.mp4"
    assert rule.key_target("/a/b.mp4?") == "/a/b.mp4"
    assert rule.key_target("/a/b.mp4") == "/a/b.mp4"


def test_the_path_is_never_touched() -> None:
    rule = QueryRule(sort=True, ignore=("*",))
    assert rule.key_target("/a%2Fb/c+d/%zz?x=1") == "/a%2Fb/c+d/%zz"
    assert rule.key_target("/a&b=c/d") == "/a&b=c/d"  # no "?": no query


def test_sort_is_by_name_and_stable_for_repeated_names() -> None:
    rule = QueryRule(sort=True)
    assert rule.key_target("/v?b=2&a=9&c=1&a=1&a=5") == "/v?a=9&a=1&a=5&b=2&c=1"
    assert rule.key_target("/v?b&a=&a") == "/v?a=&a&b"


def test_sort_compares_decoded_names_but_keeps_the_bytes() -> None:
    rule = QueryRule(sort=True)
    # %62 is "b", %61 is "a": sorted as a, b, c, and each piece is still as sent.
    assert rule.key_target("/v?c=1&%62=2&%61=3") == "/v?%61=3&%62=2&c=1"


def test_empty_pieces_go_and_an_empty_query_drops_the_question_mark() -> None:
    rule = QueryRule(ignore=("utm_*",))
    assert rule.key_target("/v?a=1&&b=2&") == "/v?a=1&b=2"
    assert rule.key_target("/v?&&") == "/v"
    assert rule.key_target("/v?") == "/v"
    assert rule.key_target("/v?utm_source=x&utm_medium=y") == "/v"


def test_kept_pieces_are_byte_for_byte_as_sent() -> None:
    rule = QueryRule(ignore=("drop me",))
    target = "/v?q=a%20b+c&%E2%9C%93=%2f&x=%zz&=empty-name&flag&a=b=c&drop+me=1&drop%20me=2"
    assert rule.key_target(target) == "/v?q=a%20b+c&%E2%9C%93=%2f&x=%zz&=empty-name&flag&a=b=c"


@pytest.mark.parametrize(("ignore", "target", "key"), [
    (("utm_*",), "/v?utm_source=a&id=1&utm_=b&xutm_c=c", "/v?id=1&xutm_c=c"),
    (("utm_*", "fbclid"), "/v?fbclid=1&id=2&gclid=3", "/v?id=2&gclid=3"),
    (("?",), "/v?a=1&ab=2&b", "/v?ab=2"),
    (("[ab]",), "/v?a=1&b=2&c=3", "/v?c=3"),
    (("ids[]",), "/v?ids[]=1&ids=2&ids%5B%5D=3", "/v?ids=2"),  # a name with brackets matches itself
    (("Id",), "/v?id=1&Id=2&ID=3", "/v?id=1&ID=3"),  # plain names are case-sensitive
    (("caf\u00e9",), "/v?caf%C3%A9=1&cafe=2", "/v?cafe=2"),
    (("100%",), "/v?100%=1&100%25=2&100=3", "/v?100=3"),  # a bad escape compares raw; %25 decodes to %
])
def test_ignore_names_and_globs(ignore: tuple[str, ...], target: str, key: str) -> None:
    assert QueryRule(ignore=ignore).key_target(target) == key


def test_only_keeps_just_the_named_and_applies_before_ignore() -> None:
    assert QueryRule(only=("id", "v*")).key_target("/v?x=1&id=2&version=3&vv=4&y") == "/v?id=2&version=3&vv=4"
    both = QueryRule(only=("v*",), ignore=("vv",), sort=True)
    assert both.key_target("/v?vv=1&version=3&id=2&v=0") == "/v?v=0&version=3"
    assert QueryRule(only=("id",)).key_target("/v?x=1") == "/v"
    assert QueryRule(only=()).key_target("/v?x=1") == "/v"


def test_signed_urls_preset_leaves_the_signature_out_of_real_urls() -> None:
    assert SIGNED.key_target(S3_TARGET) == "/bucket/video.mp4?response-content-type=video%2Fmp4"
    assert SIGNED.key_target(CF_TARGET) == "/image.jpg?color=red&size=medium"
    assert SIGNED.key_target(GCS_TARGET) == "/example-bucket/cat.jpeg?generation=3"


def test_signed_urls_preset_is_the_signature_names() -> None:
    assert PRESETS["signed-urls"] == SIGNATURE_PARAMS
    assert set(PRESETS) == {"signed-urls"}


def test_aws_and_gcs_names_match_in_any_case_cloudfront_names_do_not() -> None:
    target = "/v?x-amz-signature=1&X-AMZ-DATE=2&X-Goog-expires=3&x-goog-signature=4&signature=5&Signature=6"
    assert SIGNED.key_target(target) == "/v?signature=5"
    # The same holds for names an operator lists: S3 reads x-amz-* in any case.
    assert QueryRule(ignore=("x-amz-security-token",)).key_target("/v?X-Amz-Security-Token=t&a") == "/v?a"
    assert QueryRule(only=("x-amz-date",)).key_target("/v?X-AMZ-DATE=1&a") == "/v?X-AMZ-DATE=1"
    assert QueryRule(ignore=("X-Amz-*",)).key_target("/v?x-amz-date=1&X-Amz-Meta=2&x-amz-meta=3") == "/v?x-amz-meta=3"


def test_percent_encoded_signature_names_are_left_out_too() -> None:
    assert SIGNED.key_target("/v?X%2DAmz%2DSignature=1&a=2") == "/v?a=2"


def test_presets_and_ignore_combine() -> None:
    rule = QueryRule(ignore=("utm_*",), presets=("signed-urls",), sort=True)
    assert rule.key_target("/v?utm_a=1&Expires=2&b=3&a=4") == "/v?a=4&b=3"


def test_unknown_preset_in_code_is_a_broken_invariant() -> None:
    with pytest.raises(ValueError, match="signed-url"):
        QueryRule(presets=("signed-url",))


def test_rules_are_values() -> None:
    assert QueryRule(sort=True, ignore=("a",)) == QueryRule(sort=True, ignore=("a",))
    assert hash(QueryRule(sort=True)) == hash(QueryRule(sort=True))
    assert QueryRule(sort=True) != QueryRule()
    assert "_ignored" not in repr(SIGNED)


# --- parse_query_rule -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("table", "rule"), [
    ({}, QueryRule()),
    ({"query": "keep"}, QueryRule()),
    ({"query": "sort"}, QueryRule(sort=True)),
    ({"query": "drop"}, QueryRule(drop=True)),
    ({"ignore": ["utm_*", "fbclid"]}, QueryRule(ignore=("utm_*", "fbclid"))),
    ({"only": ["id"], "ignore": ["x"]}, QueryRule(only=("id",), ignore=("x",))),
    ({"preset": "signed-urls"}, SIGNED),
    ({"preset": ["signed-urls", "signed-urls"]}, SIGNED),
    ({"query": "sort", "ignore": ["utm_*"], "preset": ["signed-urls"]},
     QueryRule(sort=True, ignore=("utm_*",), presets=("signed-urls",))),
])
def test_parse_query_rule(table: Mapping[str, object], rule: QueryRule) -> None:
    assert parse_query_rule(table, WHERE) == rule


def test_parsed_empty_table_is_identity() -> None:
    assert parse_query_rule({}, WHERE).identity


@pytest.mark.parametrize(("table", "key", "says"), [
    ({"sort": True}, "sort", 'unknown key; did you mean query = "sort"?'),
    ({"ignored": ["a"]}, "ignored", "unknown key; known keys: query, ignore, only, preset"),
    ({"query": "keep", "Ignore": []}, "Ignore", "unknown key"),
    ({"query": "sorted"}, "query", '(got "sorted")'),
    ({"query": True}, "query", "(got boolean true)"),
    ({"query": "Sort"}, "query", '"keep" or "sort" or "drop"'),
    ({"ignore": "utm_*"}, "ignore", 'must be an array'),
    ({"ignore": ["utm_*", 3]}, "ignore", "(got integer 3 at index 1)"),
    ({"ignore": [""]}, "ignore", "non-empty"),
    ({"only": {"id": 1}}, "only", "(got a table)"),
    ({"only": []}, "only", 'query = "drop"'),
    ({"only": [["id"]]}, "only", "(got an array at index 0)"),
    ({"preset": "signed_urls"}, "preset", '(got "signed_urls")'),
    ({"preset": ["signed-urls", "nope"]}, "preset", '(got "nope")'),
    ({"preset": 1}, "preset", "(got integer 1)"),
    ({"preset": [1]}, "preset", "(got integer 1)"),
    ({"query": "drop", "ignore": ["a"]}, "ignore", "no effect"),
    ({"query": "drop", "only": ["a"]}, "only", "no effect"),
    ({"query": "drop", "preset": "signed-urls"}, "preset", "no effect"),
])
def test_parse_errors_name_the_key(table: Mapping[str, object], key: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_query_rule(table, WHERE)
    assert caught.value.key == f"{WHERE}.{key}"
    assert says in caught.value.message


# --- properties -------------------------------------------------------------------------------------------------

_NAME = st.sampled_from(["a", "b", "B", "utm_x", "id", "%61", "a+b", "%zz", "", "x-amz-date", "Expires", "é"])
_PIECE = st.one_of(
    st.just(""),
    _NAME,
    st.builds(lambda n, v: f"{n}={v}", _NAME, st.sampled_from(["", "1", "%2F", "a=b", "+", "%"])),
)
_QUERY = st.lists(_PIECE, max_size=8).map("&".join)
_RULE = st.builds(
    QueryRule,
    drop=st.booleans(),
    sort=st.booleans(),
    ignore=st.lists(st.sampled_from(["a", "utm_*", "?", "[ab]", "X-Amz-*", "é"]), max_size=3).map(tuple),
    only=st.none() | st.lists(st.sampled_from(["a", "b*", "id", "*", "Expires"]), max_size=3).map(tuple),
    presets=st.sampled_from([(), ("signed-urls",)]),
)


@given(_RULE, _QUERY)
def test_key_target_is_idempotent(rule: QueryRule, query: str) -> None:
    once = rule.key_target("/p?" + query)
    assert rule.key_target(once) == once


@given(_RULE, _QUERY)
def test_kept_pieces_are_pieces_that_were_sent(rule: QueryRule, query: str) -> None:
    key = rule.key_target("/p?" + query)
    if rule.identity:
        assert key == "/p?" + query
        return
    assert key == "/p" or key.startswith("/p?")
    kept = key[3:].split("&") if key != "/p" else []
    sent = [p for p in query.split("&") if p]
    assert all(p in sent for p in kept)
    if rule.sort:
        assert [param_name(p) for p in kept] == sorted(param_name(p) for p in kept)
    else:
        rest = iter(sent)
        assert all(p in rest for p in kept)  # a subsequence: in the order sent


@given(_QUERY)
def test_sorting_is_a_stable_permutation_of_the_non_empty_pieces(query: str) -> None:
    key = QueryRule(sort=True).key_target("/p?" + query)
    kept = key[3:].split("&") if key != "/p" else []
    sent = [p for p in query.split("&") if p]
    assert sorted(kept) == sorted(sent)
    for name in {param_name(p) for p in sent}:
        assert [p for p in kept if param_name(p) == name] == [p for p in sent if param_name(p) == name]


_SIG_PIECE = st.builds(lambda n, v: f"{n}={v}", st.sampled_from(SIGNATURE_PARAMS + ("x-amz-signature", "X-GOOG-DATE")),
                       st.sampled_from(["", "abc", "20130524T000000Z", "%2F"]))
_PLAIN = st.lists(st.builds(lambda n, v: f"{n}={v}", st.sampled_from(["a", "b", "id", "utm_x"]),
                            st.sampled_from(["1", "2", "%2F"])), max_size=5)


@given(_PLAIN, st.lists(st.tuples(st.integers(0, 5), _SIG_PIECE), max_size=6), st.booleans())
def test_queries_differing_only_in_signature_params_share_a_key(
    plain: list[str], inserted: list[tuple[int, str]], sort: bool
) -> None:
    signed = list(plain)
    for at, piece in inserted:
        signed.insert(min(at, len(signed)), piece)
    rule = QueryRule(sort=sort, presets=("signed-urls",))
    assert rule.key_target("/o?" + "&".join(signed)) == rule.key_target("/o?" + "&".join(plain))


@given(st.text(), _RULE)
def test_odd_targets_never_raise(target: str, rule: QueryRule) -> None:
    key = rule.key_target(target)
    assert key.partition("?")[0] == target.partition("?")[0]
