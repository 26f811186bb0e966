"""Hypothesis strategies for the fuzzer's inputs: connections of pipelined raw request heads.

Each generated request carries what the checks need to judge the answer: the object its target
names (so body bytes can be compared), whether it is well formed (a conforming server must answer
it; a malformed one may be refused or the connection closed, RFC 9112 section 2.2), whether it
asks for the connection to close, and the byte ranges it asked for. The labels are computed
while the bytes are built, so a mutation that breaks a request also says so.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

from hypothesis import strategies as st

__all__ = ["Catalogue", "ConnectionInput", "RequestInput", "connections", "SCRATCH_PREFIX"]

# Targets of the unsafe methods: never an object's name, so the objects' bytes never change.
SCRATCH_PREFIX = "/scratch/"
TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
# The query variants of an object: few, so the cache keys (and the proxy's memory) stay bounded.
QUERIES = ("", "", "", "?v=1", "?v=2", "?a=b&c=d", "?%20x", "?q=%ff", "?x=" + "y" * 200)
# Odd but often accepted request targets; a bounded set for the same reason.
ODD_TARGETS = (
    "/", "//", "/.", "/..", "/../etc/passwd", "/%2e%2e/x", "/%00", "/%zz", "/a%2Fb", "/\u00e9".encode().decode("latin-1"),
    "/\xff\xfe", "/x?", "/x#frag", "/x;p=1", "/" + "a" * 3000, "/~user", "/x/./y", "/healthz/../o0.bin",
    "/stats.json", "/metrics", "/healthz", "/_cache/o0.bin", "/stats", "*",
)
ADMIN_TARGETS = ("/healthz", "/stats.json", "/metrics", "/stats", "/_cache/o1.bin")
BAD_BYTES = bytes([*range(0, 9), *range(10, 32), 127])  # CTLs but HTAB: never in a field value
# Characters a field value may hold (VCHAR, SP, HTAB, obs-text; RFC 9110 section 5.5).
_FIELD_CHARS = st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f")


@dataclass(frozen=True)
class Catalogue:
    """The objects the origin serves: name -> (size, ETag, Last-Modified as an HTTP date)."""

    sizes: dict[str, int]
    etags: dict[str, str]
    last_modified: dict[str, str]

    @property
    def names(self) -> list[str]:
        return sorted(self.sizes)


@dataclass
class RequestInput:
    raw: bytes
    method: str
    name: str | None  # the object the target names (None: not an object of the catalogue)
    valid: bool  # well formed: a conforming server must answer it
    closes: bool = False  # asks for the connection to close after its answer
    has_range: bool = False  # carries a Range field (in any form)
    spans: list[tuple[int | None, int | None]] | None = None  # the ranges asked, when well formed
    version09: bool = False  # an HTTP/0.9-style request line (no version)
    incomplete: bool = False  # ends early (head or body cut): only sent on half-closed connections
    only_if_cached: bool = False  # Cache-Control: only-if-cached (a 504 is the answer when not stored, RFC 9111 5.2.1.7)
    upgrade: bool = False  # Expect or Upgrade: interim answers and protocol switches, not judged for hangs
    why: list[str] = field(default_factory=list)  # what made it invalid


@dataclass
class ConnectionInput:
    requests: list[RequestInput]
    half_close: bool

    @property
    def valid(self) -> bool:
        """Every request well formed and none after one that asks to close (RFC 9112 section 9.6:
        the server does not process requests after a "close")."""
        for i, r in enumerate(self.requests):
            if not r.valid or (r.closes and i != len(self.requests) - 1):
                return False
        return True

    @property
    def raw(self) -> bytes:
        return b"".join(r.raw for r in self.requests)


# What can break a request; a clean request draws none (most do), a broken one one or two.
BREAKS = ("method", "no-method", "long-method", "target-bytes", "target-space", "no-target", "version", "version09",
          "eol", "no-host", "two-hosts", "odd-host", "field-name", "field-value", "fold", "space-colon", "empty-name",
          "many-fields", "long-field", "framing", "expect")


def _value_ok(value: bytes) -> bool:
    return not any(b in BAD_BYTES for b in value)


def _position(draw: st.DrawFn, size: int) -> int:
    """A byte position: an edge of the object or of a slice most of the time, else anywhere."""
    edges = (0, 1, size - 1, size, size + 1, 65535, 65536, 65537, size // 2, 10**20)
    i = draw(st.integers(0, len(edges) + 3))
    return max(0, edges[i]) if i < len(edges) else draw(st.integers(0, max(0, size + 2)))


@st.composite
def _range_value(draw: st.DrawFn, size: int) -> tuple[str, list[tuple[int | None, int | None]] | None]:
    """A Range value: well formed (the spans returned), near-valid or garbage (spans None)."""
    kind = draw(st.sampled_from(["valid"] * 6 + ["near"] * 2 + ["garbage", "many"]))
    if kind == "garbage":
        return draw(st.sampled_from(["", "bytes", "bytes=", "bytes=-", "=0-1", "bytes=a-b", "0-1", "bytes=--1",
                                     "bytes=0-1;", "bytes=\xff-1"]) | st.text(_FIELD_CHARS, max_size=30)), None
    spans: list[tuple[int | None, int | None]] = []
    if kind == "many":
        # Long lists (up to past max_ranges = 100): two draws a range, as Hypothesis draws are dear.
        pairs = draw(st.lists(st.tuples(st.integers(-1, max(1, size + 1)), st.integers(0, 70000)),
                              min_size=10, max_size=130))
        for a, n in pairs:
            spans.append((None, n) if a < 0 else (a, a + n) if n % 3 else (a, None))
    else:
        for _ in range(draw(st.integers(1, 4))):
            form = draw(st.sampled_from(["ab", "ab", "a-", "-n"]))
            a = _position(draw, size)
            if form == "ab":
                b = a + draw(st.integers(0, 70000))
                spans.append((a, b))
            else:
                spans.append((a, None) if form == "a-" else (None, a))
    texts = [f"{'' if a is None else a}-{'' if b is None else b}" for a, b in spans]
    sep = draw(st.sampled_from([",", ",", ", ", " ,", ",\t"]))
    if kind == "near":
        unit = draw(st.sampled_from(["Bytes=", "bytes = ", "bytes =", "BYTES=", "bytes=,", "items=", "bytes=0-0,"]))
        sep = draw(st.sampled_from([",,", ";", " ", ", ,", ","]))
        texts[0] = draw(st.sampled_from([texts[0], "5-1", "-0", "0x10-20", "+1-2", "1-2-3", "-", "999999999999999999-"]))
        return unit + sep.join(texts), None
    return "bytes=" + sep.join(texts), spans


def _http_dates(cat: Catalogue, name: str) -> st.SearchStrategy[str]:
    lm = cat.last_modified.get(name, "Thu, 01 Jan 1970 00:00:00 GMT")
    return st.sampled_from([
        lm, lm, lm.replace("GMT", "UTC"), "Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "Mon, 32 Foo 2020 25:61:61 GMT", "yesterday",
        "0", "", "Tue, 01 Dec 2099 00:00:00 GMT",
    ])


def _etags(cat: Catalogue, name: str) -> st.SearchStrategy[str]:
    et = cat.etags.get(name, '"x"')
    return st.sampled_from([
        et, et, "W/" + et, '"nope"', "*", f'"a", {et}', et.strip('"'), '""', 'W/"', '"unterminated', "W/*",
        ",,", f"{et}, W/{et}", '"' + "x" * 500 + '"',
    ])


_CACHE_CONTROLS = st.sampled_from([
    "no-cache", "no-store", "max-age=0", "max-age=1", "max-age=-1", "max-age=abc", "max-age=99999999999999999",
    "only-if-cached", "min-fresh=10", "max-stale", "max-stale=5", "no-transform", "private", 'max-age="3"',
    "no-cache, no-store", ",,,", "max-age", "\xff", "stale-if-error=10",
])
# The conditional and other optional fields; If-Range twice, so it comes with Range more often.
OPTIONAL = ("If-Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since",
            "Cache-Control", "Pragma", "Accept-Encoding", "Connection", "X-Extra")


@st.composite
def _fields(draw: st.DrawFn, cat: Catalogue, name: str | None, breaks: set[str], out: dict[str, object]) -> list[bytes]:
    """The header fields (as raw lines without the terminator) of one request."""
    n = name or ""
    size = cat.sizes.get(n, 1000)
    lines: list[bytes] = []
    if "two-hosts" in breaks:
        lines += [b"Host: 127.0.0.1", b"Host: example.com"]
    elif "odd-host" in breaks:
        lines.append(b"Host: " + draw(st.sampled_from([b"", b"a b", b"[::1", b"x:99999", b"\xff"])))
    elif "no-host" not in breaks:
        lines.append(b"Host: 127.0.0.1")
    if draw(st.integers(0, 9)) < 6:
        value, spans = draw(_range_value(size))
        rname = draw(st.sampled_from(["Range"] * 8 + ["range", "RANGE"]))
        lines.append(f"{rname}: {value}".encode("latin-1", "replace"))
        out["has_range"] = True
        out["spans"] = spans
    for fname in draw(st.lists(st.sampled_from(OPTIONAL), max_size=3, unique=True)):
        if fname == "If-Range":
            v = draw(st.one_of(_etags(cat, n), _http_dates(cat, n)))
        elif fname in ("If-None-Match", "If-Match"):
            v = draw(_etags(cat, n))
        elif fname.endswith("-Since"):
            v = draw(_http_dates(cat, n))
        elif fname == "Cache-Control":
            v = draw(_CACHE_CONTROLS)
            out["only_if_cached"] = "only-if-cached" in v
        elif fname == "Pragma":
            v = "no-cache"
        elif fname == "Accept-Encoding":
            v = draw(st.sampled_from(["gzip", "identity;q=0", "*", "br, gzip"]))
        elif fname == "Connection":
            v = draw(st.sampled_from(["keep-alive", "close", "Close", "keep-alive, close", "x-foo"]))
            out["close"] = "close" in v.lower()
            out["keep_alive"] = "keep-alive" in v.lower()
        else:
            fname = draw(st.text(TCHAR, min_size=1, max_size=20))
            v = draw(st.text(_FIELD_CHARS, max_size=30))
        lines.append(f"{fname}: {v}".encode("latin-1", "replace"))
    if "expect" in breaks:  # interim answers and protocol switches: not judged here
        lines.append(draw(st.sampled_from([b"Expect: 100-continue", b"Expect: nonsense", b"Upgrade: websocket",
                                           b"Upgrade: h2c\r\nConnection: upgrade"])))
    if "field-name" in breaks:
        lines.append(draw(st.binary(min_size=1, max_size=15)).replace(b":", b"").replace(b"\n", b"") + b": v")
    if "field-value" in breaks:
        bad = draw(st.binary(max_size=20)).replace(b"\n", b"")
        lines.append(b"X-Bad: " + (bad if not _value_ok(bad) else bad + b"\x00"))
    if "fold" in breaks:
        lines.append(b"X-Folded: a\r\n" + draw(st.sampled_from([b" ", b"\t", b"  "])) + b"folded")
    if "space-colon" in breaks:
        lines.append(b"X-Sp" + draw(st.sampled_from([b" ", b"\t"])) + b": v")
    if "empty-name" in breaks:
        lines.append(b": v")
    if "many-fields" in breaks:
        lines += [b"X-Many-%d: v" % i for i in range(draw(st.sampled_from([100, 129, 300])))]
    if "long-field" in breaks:
        lines.append(b"X-Long: " + b"v" * draw(st.sampled_from([8200, 70000])))
    return lines


@st.composite
def _framing(draw: st.DrawFn, method: str, breaks: set[str], out: dict[str, object]) -> tuple[list[bytes], bytes]:
    """Body framing fields and the body: none, Content-Length, chunked, and the broken or
    ambiguous combinations request smuggling is made of (RFC 9112 sections 6.1-6.3)."""
    unsafe = method in ("POST", "PUT", "PATCH", "DELETE")
    if "framing" in breaks:
        kind = draw(st.sampled_from(["dup-cl-same", "dup-cl-diff", "cl-te", "bad-cl", "bad-te", "bad-chunk", "te-twice",
                                     "short"]))
    else:
        kinds = (["cl"] * 4 + ["chunked"] * 2 + ["none"]) if unsafe else (["none"] * 12 + ["cl", "chunked"])
        kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return [], b""
    body = draw(st.binary(max_size=300))
    if kind == "cl":
        return [b"Content-Length: %d" % len(body)], body
    if kind == "chunked":
        return [b"Transfer-Encoding: chunked"], _chunked(draw, body)
    out["framing"] = kind
    if kind == "dup-cl-same":
        return [b"Content-Length: %d" % len(body)] * 2, body
    if kind == "dup-cl-diff":
        return [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1)], body
    if kind == "cl-te":
        return [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"], _chunked(draw, body)
    if kind == "bad-cl":
        v = draw(st.sampled_from([b"-1", b"+%d" % len(body), b"%d %d" % (len(body), len(body)), b"0x10", b"",
                                  b"1e3", b"99999999999999999999999", b"%d," % len(body)]))
        return [b"Content-Length: " + v], body
    if kind == "bad-te":
        v = draw(st.sampled_from([b"chunked, identity", b"gzip", b"xchunked", b"chunked ,", b"identity",
                                  b"gzip, chunked", b"\x0bchunked", b"CHUNKED", b"chunked;q=1"]))
        return [b"Transfer-Encoding: " + v], _chunked(draw, body)
    if kind == "te-twice":
        return [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], _chunked(draw, body)
    if kind == "bad-chunk":
        return [b"Transfer-Encoding: chunked"], draw(st.sampled_from([
            b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n", b"-1\r\n\r\n", b"3\nabc\n0\n\n",
            b"ffffffffffffffffffff\r\n", b"3 ;x\r\nabc\r\n0\r\n\r\n", b"0x3\r\nabc\r\n0\r\n\r\n"]))
    out["incomplete"] = True  # short: a body shorter than its Content-Length
    return [b"Content-Length: %d" % (len(body) + 5)], body


def _chunked(draw: st.DrawFn, body: bytes) -> bytes:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=3)))) if len(body) > 1 else []
    bounds = [0, *cuts, len(body)] if body else [0]
    parts = [b"%x%s\r\n%s\r\n" % (b - a, b";a=b" if i == 1 else b"", body[a:b])
             for i, (a, b) in enumerate(zip(bounds, bounds[1:])) if b > a]
    return b"".join(parts) + b"0\r\n\r\n"


@st.composite
def _request(draw: st.DrawFn, cat: Catalogue, may_cut: bool) -> RequestInput:
    breaks: set[str] = set()
    if draw(st.integers(0, 9)) >= 8:
        breaks = set(draw(st.lists(st.sampled_from(BREAKS), min_size=1, max_size=2)))
    kind = draw(st.sampled_from(["object"] * 20 + ["scratch", "odd", "admin"]))
    name: str | None = None
    if kind == "object":
        name = draw(st.sampled_from(cat.names))
        method = draw(st.sampled_from(["GET"] * 10 + ["HEAD"] * 2 + ["OPTIONS", "get", "FOO", "TRACE", "PROPFIND"]))
        prefix = draw(st.sampled_from(["/"] * 10 + ["//", "http://127.0.0.1/"]))
        target = prefix + name + draw(st.sampled_from(QUERIES))
    elif kind == "scratch":
        method = draw(st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET", "post"]))
        target = SCRATCH_PREFIX + draw(st.sampled_from("abcdefgh"))
        name = target[1:]  # never faulted: a 5xx for it is never excused (no bytes to compare)
    elif kind == "admin":
        method = draw(st.sampled_from(["GET", "HEAD", "OPTIONS"]))  # no purge: the bytes are checked, not the cache
        target = draw(st.sampled_from(ADMIN_TARGETS))
    else:
        method = draw(st.sampled_from(["GET", "HEAD", "OPTIONS", "GET"]))
        target = draw(st.sampled_from(ODD_TARGETS))
    if "method" in breaks:
        method = draw(st.sampled_from(["G ET", "GE\x00T", "GET\t", "\xffGET", "(GET)", "GET/"]))
    elif "no-method" in breaks:
        method = ""
    elif "long-method" in breaks:
        method = "G" * draw(st.sampled_from([100, 9000]))
    if "target-bytes" in breaks:
        target += draw(st.binary(min_size=1, max_size=6)).decode("latin-1")
    elif "target-space" in breaks:
        target = target.replace("/", "/ ", 1)
    elif "no-target" in breaks:
        target = ""
    if breaks & {"method", "no-method", "long-method", "target-bytes", "target-space", "no-target"}:
        name = None
    version = draw(st.sampled_from(["HTTP/1.1"] * 9 + ["HTTP/1.0"]))
    if "version" in breaks:
        version = draw(st.sampled_from(["HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1", "HTTP/1.1 ", "HTTP/01.1",
                                        "HTTP/1.1x", "HTTP/9.9"]))
    version09 = "version09" in breaks
    eol = draw(st.sampled_from([b"\n", b"\r", b"\n\r"])) if "eol" in breaks else b"\r\n"
    out: dict[str, object] = {}
    lines = draw(_fields(cat, name, breaks, out))
    flines, body = draw(_framing(method, breaks, out))
    lines += flines
    if draw(st.integers(0, 9)) == 5:
        lines = draw(st.permutations(lines))
    line = (method + " " + target + ("" if version09 else " " + version)).encode("latin-1")
    head = line + eol + b"".join(x + eol for x in ([] if version09 else lines)) + eol
    raw = head + body
    incomplete = bool(out.get("incomplete"))
    if may_cut and draw(st.integers(0, 9)) == 5:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
        incomplete = True
    why = sorted(breaks - {"version09"} if not version09 else breaks)
    if "no-host" in breaks and version != "HTTP/1.1":
        why.remove("no-host")  # HTTP/1.0 needs no Host
    if "long-method" in breaks and len(method) < 4000:
        why.remove("long-method")  # a long but acceptable token
    if out.get("framing"):
        why.append(str(out["framing"]))
    if incomplete:
        why.append("incomplete")
    if any(ord(c) > 126 or ord(c) < 33 for c in target) and "target-bytes" not in why:
        why.append("target-bytes")
    closes = (version == "HTTP/1.0" and not out.get("keep_alive")) or bool(out.get("close")) or version09
    spans_drawn = out.get("spans")
    spans = spans_drawn if isinstance(spans_drawn, list) else None
    return RequestInput(raw=raw, method=method, name=name, valid=not why, closes=closes,
                        has_range=bool(out.get("has_range")), spans=spans, version09=version09,
                        incomplete=incomplete, why=why, only_if_cached=bool(out.get("only_if_cached")),
                        upgrade="expect" in breaks)


@st.composite
def connections(draw: st.DrawFn, cat: Catalogue) -> ConnectionInput:
    """One connection: 1-6 pipelined requests, sometimes half-closed (shutdown(SHUT_WR)) after
    sending. Only the last request of a half-closed connection may be cut short: elsewhere a cut
    would leave the server waiting for the rest, which is no fault of the server."""
    half_close = draw(st.integers(0, 9)) == 5
    n = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4, 6]))
    reqs = [draw(_request(cat, may_cut=half_close and i == n - 1)) for i in range(n)]
    if not half_close:
        reqs = [r for r in reqs if not r.incomplete] or reqs[:0]
    if not reqs:
        reqs = [RequestInput(raw=b"GET /o1.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method="GET", name="o1.bin",
                             valid=True)]
    return ConnectionInput(requests=reqs, half_close=half_close)
