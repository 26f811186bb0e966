"""What the origin said about an object, and whether an upstream piece agrees with it.

Pure: functions over header mappings and numbers. Every upstream answer is checked
against the object's reference (ATS slice: "Mismatch block Etag", "Mismatch/Bad
block Content-Range") before a single byte of it may be cached or served. What a
first answer or a revalidation answer means is an outcome value here; the cache
layer only acts on it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from typing import Any, Mapping

from proxy.core.fields import Fields, FieldsView, freshen, initial_age, stored_fields
from proxy.core.surrogate import surrogate_directives
from proxy.http.dates import parse_http_date
from proxy.http.ranges import Span, parse_content_range, parse_int

__all__ = ["ObjectMeta", "Freshness", "Mismatch", "directives", "field_value", "freshness", "meta_from_response", "Sharing", "shareable", "strong_validator", "same_version", "check_piece",
           "Learned", "Empty", "PastEnd", "Refused", "Unusable", "FirstAnswer", "first_answer",
           "Refreshed", "Changed", "Gone", "Erred", "Revalidation", "revalidation"]


@dataclass(frozen=True, slots=True)
class Freshness:
    """RFC 9111 §5.2.2 response directives that decide storing and lifetime."""

    storable: bool
    ttl: float  # seconds the stored object is fresh; 0 means "revalidate every time"


@dataclass(frozen=True, slots=True)
class Sharing:
    """Who asked, and what the operator allows: whether an answer may serve other clients."""

    authorized: bool = False  # the request carried Authorization (RFC 9111 §3.5)
    keep_cookies: bool = False  # the setting store_set_cookie


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """The reference representation; slices are keyed by its ``validator``."""

    url: str
    length: int
    etag: str | None
    last_modified: str | None
    content_type: str | None
    stored_at: float  # when the origin last confirmed this version (epoch seconds)
    ttl: float
    storable: bool = True
    headers: Fields = ()  # the origin's header fields as stored (proxy.core.fields.stored_fields)
    # Stored without a strong validator: the one upstream answer that brought all of it
    # (RFC 9111 §3.4: its slices are never combined with another answer's).
    answer: str = ""

    @property
    def validator(self) -> str:
        """What ties slices to one version: a strong ETag with the length, else Last-Modified +
        length, or for an object without a strong validator the one answer its slices came from.

        The length is part of it even with a strong ETag: an origin that keeps its ETag across a
        change of length (a broken one) would otherwise have the old version's slices, and the
        files held open for them, taken for the new one's.
        """
        if self.answer:
            return "a:" + self.answer
        if self.etag and not self.etag.startswith("W/"):
            return f"e:{self.length}:{self.etag}"
        return f"m:{self.last_modified or ''}:{self.length}"

    def is_fresh(self, now: float) -> bool:
        return now < self.stored_at + self.ttl

    def age(self, now: float) -> int:
        """RFC 9111 §4.2.3: the age it arrived with, plus the time it has been here since."""
        return initial_age(self.headers) + max(0, int(now - self.stored_at))

    def revalidated(self, now: float, ttl: float, update: Mapping[str, str] | None = None) -> ObjectMeta:
        """Confirmed current at ``now``; RFC 9111 §3.2: the answer's fields freshen the stored ones."""
        if update is None:
            return replace(self, stored_at=now, ttl=ttl)
        # The stored Age was that of the old answer: the new one's (or none) counts from now.
        kept = tuple((n, v) for n, v in self.headers if n.lower() != "age")
        headers = freshen(kept, update.items())
        ctype = next((v for n, v in headers if n.lower() == "content-type"), self.content_type)
        return replace(self, stored_at=now, ttl=ttl, headers=headers, content_type=ctype)

    def to_dict(self) -> dict[str, object]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObjectMeta:
        values = {f: d[f] for f in cls.__dataclass_fields__}
        values["headers"] = tuple((str(n), str(v)) for n, v in values["headers"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """An upstream piece disagreed with the request or the reference (never cached)."""

    reason: str
    version_changed: bool = False  # the validator moved: the object changed upstream


_DIRECTIVE = re.compile(r"\s*([A-Za-z-]+)\s*(?:=\s*(\"[^\"]*\"|[^,\s]*))?\s*(?:,|$)")


def directives(value: str | None) -> dict[str, str | None]:
    """Cache-Control directives, names lowercased, quoted arguments unquoted (RFC 9111 §5.2)."""
    out: dict[str, str | None] = {}
    if not value:
        return out
    for m in _DIRECTIVE.finditer(value):
        if m.group(1):
            arg = m.group(2)
            # RFC 9111 §4.2.1: with a directive repeated, the first one counts.
            out.setdefault(m.group(1).lower(), arg.strip('"') if arg is not None else None)
    return out


def field_value(headers: Mapping[str, str], name: str) -> str | None:
    """Every line of a list header, joined (aiohttp keeps repeated lines apart)."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values = getall(name, [])
        return ", ".join(values) if values else None
    return headers.get(name)


def _seconds(arg: str | None) -> int | None:
    return parse_int(arg) if arg is not None else None


def _content_length(headers: Mapping[str, str]) -> int | None:
    """Content-Length when it is a plain decimal (RFC 9110 §8.6), else None."""
    return _seconds(headers.get("Content-Length"))


def _age(headers: Mapping[str, str]) -> int | None:
    """The Age field (RFC 9111 §5.1): one non-negative integer, 0 when absent, None when it is
    anything else (a list, a sign, a fraction, a parameter: nothing to trust)."""
    value = field_value(headers, "Age")
    if value is None:
        return 0
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() else None


def freshness(headers: Mapping[str, str], now: float, default_ttl: float) -> Freshness:
    """Storability and lifetime for a shared cache (RFC 9111 §3, §4.2.1, §5.2.2)."""
    got = _freshness(headers, now, default_ttl)
    # An Age that cannot be read could be any age: the response counts as stale already.
    return Freshness(got.storable, 0.0) if _age(headers) is None else got


def _freshness(headers: Mapping[str, str], now: float, default_ttl: float) -> Freshness:
    cc = directives(field_value(headers, "Cache-Control"))
    # RFC 9111 §4.2.3: an upstream cache's Age has already used part of the lifetime.
    age = _age(headers) or 0
    # Surrogate-Control, where it says something, speaks to this cache instead of Cache-Control.
    sc = surrogate_directives(headers)
    if sc is not None and "no-store" in sc:
        return Freshness(False, 0.0)
    if sc is not None and "max-age" in sc:
        secs = _seconds((sc["max-age"] or "").split("+")[0])  # "N+M": M is a stale window
        if secs is not None:
            return Freshness(True, float(max(0, secs - age)))
    # RFC 9111 §5.2.2.5/§5.2.2.7: no-store and private forbid a shared cache to store.
    if "no-store" in cc or "private" in cc:
        return Freshness(False, 0.0)
    # §5.2.2.4: no-cache may be stored but must be revalidated before each use.
    if "no-cache" in cc:
        return Freshness(True, 0.0)
    # §4.2.1: s-maxage beats max-age beats Expires for a shared cache.
    for name in ("s-maxage", "max-age"):
        secs = _seconds(cc.get(name)) if name in cc else None
        if secs is not None:
            return Freshness(True, float(max(0, secs - age)))
    if "Expires" in headers:
        expires = parse_http_date(headers["Expires"])
        date = parse_http_date(headers.get("Date"))
        base = now if date is None else date
        # §5.3: an invalid Expires (e.g. "0") means already expired.
        return Freshness(True, max(0.0, float(expires - base - age)) if expires is not None else 0.0)
    # §4.2.2: a heuristic lifetime (default_ttl) only with a validator to check it later by;
    # without one, a response with no freshness of its own is not reused.
    if headers.get("ETag") is None and headers.get("Last-Modified") is None:
        return Freshness(True, 0.0)
    return Freshness(True, max(0.0, default_ttl - age))


def strong_validator(headers: Mapping[str, str]) -> bool:
    """Can pieces of this response be combined with pieces of another fetch (RFC 9111 §3.4)?

    Only under a strong validator: a strong ETag, or a Last-Modified that RFC 9110 §8.8.2.2
    lets a cache count as strong (the response's Date at least one second after it).
    """
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return True
    lm, date = parse_http_date(headers.get("Last-Modified")), parse_http_date(headers.get("Date"))
    return lm is not None and date is not None and date - lm >= 1


def meta_from_response(
    url: str, status: int, headers: Mapping[str, str], now: float, default_ttl: float, sharing: Sharing = Sharing()
) -> ObjectMeta | None:
    """Learn an object's reference from a 206 (Content-Range total) or a 200 (Content-Length)."""
    if status == 206:
        cr = parse_content_range(headers.get("Content-Range"))
        if cr is None or cr.span is None or cr.length is None:
            return None
        length = cr.length
        whole = cr.span.start == 0 and cr.span.end >= length
    elif status == 200:
        cl = _content_length(headers)
        if cl is None:
            return None
        length, whole = cl, True
    else:
        return None
    fresh = freshness(headers, now, default_ttl)
    strong = strong_validator(headers)
    # A 200, or a 206 of all of it (``whole``): one answer holds every byte, so it can be stored
    # even without a strong validator, as long as nothing is ever added to it from another answer.
    return ObjectMeta(
        url=url,
        length=length,
        etag=headers.get("ETag"),
        last_modified=headers.get("Last-Modified"),
        content_type=headers.get("Content-Type"),
        stored_at=now,
        ttl=fresh.ttl,
        # Without a strong validator only a whole answer is stored: slices of two fetches could
        # be two versions, and nothing would tell them apart. (Who may share it: :func:`shareable`.)
        storable=fresh.storable and (strong or whole) and shareable(headers, sharing),
        headers=stored_fields(headers.items()),
        answer="" if strong else secrets.token_hex(8),
    )


def shareable(headers: Mapping[str, str], sharing: Sharing = Sharing()) -> bool:
    """May an answer that a cache could store serve other clients than the one it answered?

    RFC 9111 §3.5: not an answer to a request with Authorization, unless it says
    must-revalidate, public or s-maxage. RFC 9111 §7.4 / RFC 6265: not one that sets a
    cookie, unless the operator says so (``keep_cookies``; its Set-Cookie is never stored).
    """
    if sharing.authorized:
        cc = directives(field_value(headers, "Cache-Control"))
        if not ("must-revalidate" in cc or "public" in cc or "s-maxage" in cc):
            return False
    return sharing.keep_cookies or headers.get("Set-Cookie") is None


def same_version(meta: ObjectMeta, headers: Mapping[str, str], length: int | None) -> Mismatch | None:
    """Does an upstream answer describe the same version as ``meta``?"""
    etag = headers.get("ETag")
    if meta.etag is not None and etag != meta.etag:
        return Mismatch(f"ETag {etag!r} != reference {meta.etag!r}", version_changed=True)
    lm = headers.get("Last-Modified")
    if meta.last_modified is not None and lm != meta.last_modified:
        return Mismatch(f"Last-Modified {lm!r} != reference {meta.last_modified!r}", version_changed=True)
    if length is not None and length != meta.length:
        return Mismatch(f"length {length} != reference {meta.length}", version_changed=True)
    return None


def check_piece(meta: ObjectMeta, asked: Span, status: int, headers: Mapping[str, str]) -> Mismatch | None:
    """Verify an upstream answer to ``Range: asked`` before any of its bytes are used.

    A 200 is acceptable (an origin that ignores Range) when it is the same version;
    the caller then skips to ``asked.start`` itself.
    """
    if status == 200:
        length = _content_length(headers)
        if length is None:
            return Mismatch("200 without Content-Length")
        return same_version(meta, headers, length)
    if status != 206:
        return Mismatch(f"status {status}, expected 206")
    cr = parse_content_range(headers.get("Content-Range"))
    if cr is None or cr.span is None or cr.length is None:
        return Mismatch(f"bad Content-Range {headers.get('Content-Range')!r}")
    changed = same_version(meta, headers, cr.length)
    if changed is not None:
        return changed
    if cr.span != asked:
        return Mismatch(f"unexpected range in slice response: {cr.span.start}-{cr.span.end - 1}, "
                        f"expected: {asked.start}-{asked.end - 1}")
    cl = headers.get("Content-Length")
    if cl is not None and _seconds(cl) != asked.size:
        return Mismatch(f"Content-Length {cl} != {asked.size}")
    return None


# --- what the first answer about an unknown object means ----------------------------


@dataclass(frozen=True, slots=True)
class Learned:
    """A 200 or 206 that describes the object and carries the bytes asked for."""

    meta: ObjectMeta


@dataclass(frozen=True, slots=True)
class Empty:
    """A 416 saying the object has no bytes at all: it is learnt, with nothing to fetch."""

    meta: ObjectMeta


@dataclass(frozen=True, slots=True)
class PastEnd:
    """A 416 for a request that started past the end of an object of ``length`` bytes."""

    length: int


@dataclass(frozen=True, slots=True)
class Refused:
    """An error status: passed through to the client (RFC 9111 §3: not stored)."""

    status: int


@dataclass(frozen=True, slots=True)
class Unusable:
    """An answer that must not be used; ``mismatch`` when it disagrees with the request."""

    reason: str
    mismatch: bool = False


FirstAnswer = Learned | Empty | PastEnd | Refused | Unusable


def first_answer(url: str, asked: Span, status: int, headers: Mapping[str, str], now: float,
                 default_ttl: float, sharing: Sharing = Sharing()) -> FirstAnswer:
    """What the origin's answer to the first ``Range: asked`` for ``url`` tells us.

    ``asked`` is not clipped (the length is not known yet); a 206 must cover it up to
    the end of the object, checked as every later piece is (:func:`check_piece`).
    """
    if status == 416:
        cr = parse_content_range(headers.get("Content-Range"))
        # RFC 9110 §15.5.17: a 416 carries "bytes */complete-length".
        if cr is None or cr.length is None:
            return Unusable(f"{url}: 416 without a complete length")
        if cr.length == 0:
            return Empty(ObjectMeta(url, 0, headers.get("ETag"), headers.get("Last-Modified"),
                                    headers.get("Content-Type"), now, freshness(headers, now, default_ttl).ttl,
                                    headers=stored_fields(headers.items())))
        return PastEnd(cr.length)
    if status not in (200, 206):
        return Refused(status)
    meta = meta_from_response(url, status, headers, now, default_ttl, sharing)
    if meta is None:
        return Unusable(f"{url}: origin answer {status} has no usable length")
    if status == 206:
        bad = check_piece(meta, Span(asked.start, min(asked.end, meta.length)), status, headers)
        if bad is not None:
            return Unusable(f"{url}: {bad.reason}", mismatch=True)
    return Learned(meta)


# --- what a revalidation answer means (RFC 9111 §4.3) -------------------------------


@dataclass(frozen=True, slots=True)
class Refreshed:
    """The stored version is still current; ``meta`` carries its new lifetime."""

    meta: ObjectMeta


@dataclass(frozen=True, slots=True)
class Changed:
    """The origin has another version: drop the stored one and learn the new one."""

    reason: str


@dataclass(frozen=True, slots=True)
class Gone:
    """404 or 410: the object is gone; drop it and pass the status through."""

    status: int


@dataclass(frozen=True, slots=True)
class Erred:
    """Any other status: the revalidation failed. Whether the stored object may still answer
    is :func:`proxy.core.staleness.on_error`'s decision (RFC 9111 §4.2.4, RFC 5861 §4)."""

    status: int


Revalidation = Refreshed | Changed | Gone | Erred


def _refreshed(meta: ObjectMeta, headers: Mapping[str, str], now: float, default_ttl: float) -> ObjectMeta:
    new = meta.revalidated(now, 0.0, headers)
    return replace(new, ttl=freshness(FieldsView(new.headers), now, default_ttl).ttl)


def revalidation(meta: ObjectMeta, status: int, headers: Mapping[str, str], now: float,
                 default_ttl: float) -> Revalidation:
    """The outcome of a conditional request for ``meta`` (If-None-Match / If-Modified-Since)."""
    if status == 304:
        # RFC 9111 §4.3.4: the 304's fields update the stored ones, and the lifetime is that of
        # the response they make (a 304 need not repeat Cache-Control or the validators).
        return Refreshed(_refreshed(meta, headers, now, default_ttl))
    if status in (200, 206):
        if status == 206:
            cr = parse_content_range(headers.get("Content-Range"))
            length = cr.length if cr else None
        else:
            length = _content_length(headers)
        changed = same_version(meta, headers, length)
        if changed is None:
            return Refreshed(_refreshed(meta, headers, now, default_ttl))
        return Changed(changed.reason)
    if status in (404, 410):
        return Gone(status)
    return Erred(status)
