"""The soak's checker finds what it is there to find: wrong bytes, wrong ranges, wrong
conditionals, 5xx with no fault to excuse them (hardening.soak_check, hardening.soak.match)."""

from __future__ import annotations

from hardening.soak import match, stale
from hardening.soak_check import Answer, check, resolve_range
from hardening.soak_origin import parse_etag, version_bytes

SEED = 5
NAME = "obj001.bin"
V1 = version_bytes(SEED, NAME, 1)
V2 = version_bytes(SEED, NAME, 2)
E1, E2 = f'"v1-{NAME}"', f'"v2-{NAME}"'


def version(name: str, n: int) -> bytes:
    return version_bytes(SEED, name, n)


def answer(status: int, body: bytes = b"", request: dict[str, str] | None = None, method: str = "GET",
           complete: bool = True, **headers: str) -> Answer:
    fields = {k.replace("_", "-"): v for k, v in headers.items()}
    return Answer(NAME, method, request or {}, status, fields, body, complete)


def test_versions_are_reproducible_and_distinct() -> None:
    assert version_bytes(SEED, NAME, 1) == V1 and V1 != V2
    assert parse_etag(E2) == (NAME, 2) and parse_etag('W/"x"') is None


def test_resolve_range() -> None:
    assert resolve_range("0-9", 100) == (0, 9)
    assert resolve_range("90-200", 100) == (90, 99)
    assert resolve_range("-10", 100) == (90, 99)
    assert resolve_range("50-", 100) == (50, 99)
    assert resolve_range("100-", 100) is None and resolve_range("-0", 100) is None


def test_a_right_206_passes_and_one_wrong_byte_is_counted() -> None:
    req = {"Range": "bytes=10-1009"}
    ok = check(answer(206, V1[10:1010], req, ETag=E1, Content_Range=f"bytes 10-1009/{len(V1)}"), version, {})
    assert (ok.checked, ok.wrong, ok.problems) == (1000, 0, [])
    bad = bytearray(V1[10:1010])
    bad[500] ^= 1
    v = check(answer(206, bytes(bad), req, ETag=E1, Content_Range=f"bytes 10-1009/{len(V1)}"), version, {})
    assert v.wrong == 1 and v.problems


def test_bytes_of_another_version_under_an_etag_are_wrong() -> None:
    n = min(len(V1), len(V2))
    v = check(answer(200, V2[:n], ETag=E1), version, {})
    assert v.wrong > 0


def test_a_206_of_another_range_or_length_is_a_problem() -> None:
    req = {"Range": "bytes=0-99"}
    assert check(answer(206, V1[1:101], req, ETag=E1, Content_Range=f"bytes 1-100/{len(V1)}"), version, {}).problems
    assert check(answer(206, V1[:100], req, ETag=E1, Content_Range=f"bytes 0-99/{len(V1) + 1}"), version, {}).problems


def test_a_cut_answer_is_checked_as_a_prefix() -> None:
    v = check(answer(200, V1[:500], ETag=E1, complete=False), version, {})
    assert (v.checked, v.wrong, v.problems) == (500, 0, [])


def test_conditionals() -> None:
    # A 304 must carry the ETag asked about; a 200 of that very ETag to If-None-Match is wrong.
    assert not check(answer(304, request={"If-None-Match": E1}, ETag=E1), version, {}).problems
    assert check(answer(304, request={"If-None-Match": E1}, ETag=E2), version, {}).problems
    assert check(answer(200, V1, {"If-None-Match": E1}, ETag=E1), version, {}).problems
    # If-Range: a 206 only of the version named.
    req = {"Range": "bytes=0-9", "If-Range": E1}
    assert check(answer(206, V2[:10], req, ETag=E2, Content_Range=f"bytes 0-9/{len(V2)}"), version, {}).problems
    assert not check(answer(200, V2, req, ETag=E2), version, {}).problems
    # If-Modified-Since: no 304 for a version modified later.
    ims = {"If-Modified-Since": "Tue, 01 Dec 2026 10:00:00 GMT"}
    ten = 1_796_119_200.0  # that date
    assert check(answer(304, request=ims, ETag=E2), version, {E2: ten + 3600}).problems
    assert not check(answer(304, request=ims, ETag=E2), version, {E2: ten - 60}).problems


def test_head_length_and_a_foreign_etag() -> None:
    assert not check(answer(200, method="HEAD", ETag=E1, Content_Length=str(len(V1))), version, {}).problems
    assert check(answer(200, method="HEAD", ETag=E1, Content_Length=str(len(V1) + 1)), version, {}).problems
    assert check(answer(200, V1, ETag='"v1-obj002.bin"'), version, {}).problems


def test_multipart_parts_are_checked() -> None:
    size = len(V1)
    req = {"Range": "bytes=0-9,100-199"}

    def body(second: bytes) -> bytes:
        return (b"--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-9/%d\r\n\r\n" % size
                + V1[:10] + b"\r\n--B\r\nContent-Range: bytes 100-199/%d\r\n\r\n" % size + second + b"\r\n--B--\r\n")

    ctype = "multipart/byteranges; boundary=B"
    ok = check(answer(206, body(V1[100:200]), req, ETag=E1, Content_Type=ctype), version, {})
    assert (ok.checked, ok.wrong, ok.problems) == (110, 0, [])
    bad = check(answer(206, body(V2[100:200]), req, ETag=E1, Content_Type=ctype), version, {})
    assert bad.wrong > 0


def test_a_5xx_is_matched_only_to_a_fault_that_causes_it_on_that_object_about_then() -> None:
    events: list[dict[str, object]] = [
        {"ev": "fault", "name": "a", "kind": "fail500", "excuses": True, "t0": 10.0, "t1": 11.0},
        {"ev": "fault", "name": "b", "kind": "reset_once", "excuses": False, "t0": 10.0, "t1": 11.0},
        {"ev": "fault", "name": "c", "kind": "stall", "excuses": True, "t0": 10.0, "t1": 11.0},
    ]
    assert match([("a", "500", 10.5, 10.6, 0), ("c", "504", 11.5, 13.6, 0)], events) == (2, 0, [])
    failures = [("a", "500", 30.0, 30.1, 0),  # no fault then
                ("a", "502", 10.5, 10.6, 0),  # a 500 fault does not make a 502
                ("b", "502", 10.5, 10.6, 0),  # one reset before the status line is retried: no excuse
                ("z", "503", 10.5, 10.6, 0)]  # another object
    matched, by_change, unmatched = match(failures, events)
    assert (matched, by_change, len(unmatched)) == (0, 0, 4)


def test_a_cut_answer_is_excused_by_a_change_while_it_was_sent_and_a_502_is_not() -> None:
    events: list[dict[str, object]] = [{"ev": "change", "name": "a", "version": 3, "t": 50.0}]
    assert match([("a", "cut 206 (multi)", 49.9, 50.2, 2)], events) == (0, 1, [])
    _, by_change, unmatched = match([("a", "cut 206 (multi)", 49.9, 50.2, 3),  # of the new version
                                     ("a", "cut 206 (multi)", 55.0, 55.2, 2),  # long after
                                     ("a", "502 (full)", 49.9, 50.2, 0)], events)
    assert by_change == 0 and len(unmatched) == 3


def test_an_old_version_answered_past_max_age_after_the_change_is_stale() -> None:
    events: list[dict[str, object]] = [{"ev": "change", "name": "a", "version": 2, "t": 100.0}]
    # max-age 2 s + 1 s of slack after the change at 100 s: v1 at 102.5 s is fine, at 104 s it is not.
    assert stale([("a", 1, 102.5), ("a", 2, 110.0), ("b", 1, 200.0)], events) == (0, 0.0)
    assert stale([("a", 1, 104.0)], events) == (1, 4.0)
