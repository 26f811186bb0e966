"""One copy of the header fields many objects share, not one per object's metadata.

Every stored object's metadata carries the origin's header fields (ObjectMeta.headers). Read
back from the store each comes as its own strings and tuples, some 600 bytes an object, while
most pairs are the same for every object of an origin (``Content-Type: video/mp4``,
``Cache-Control: max-age=86400``, ``Accept-Ranges: bytes``). Here each pair, and the field
names and content types, are kept once: a million objects' metadata then costs the per-object
parts (URL, ETag) and a tuple of pointers. The table is bounded: per-object pairs (an ETag, a
Last-Modified) pass through it, and when it is full it starts again, the shared pairs coming
back on their next use.
"""

from __future__ import annotations

from dataclasses import replace

from proxy.core.representation import ObjectMeta

__all__ = ["compact", "LIMIT"]

LIMIT = 4096  # interned pairs and strings kept at most (then the table starts again)
_table: dict[object, object] = {}


def _one(value: object) -> object:
    got = _table.get(value)
    if got is None:
        if len(_table) >= LIMIT:
            _table.clear()
        _table[value] = got = value
    return got


def compact(meta: ObjectMeta) -> ObjectMeta:
    """``meta`` with its shared parts replaced by the one copy of each (equal, not identical)."""
    etag = meta.etag
    pairs = tuple((_one(n), etag) if v == etag else _one((_one(n), v)) for n, v in meta.headers)
    ctype = _one(meta.content_type) if meta.content_type is not None else None
    return replace(meta, headers=pairs, content_type=ctype)  # type: ignore[arg-type]
