"""What the media app serves, as rules shared by its HTTP side (:mod:`appserver.app`) and its
change feed (:mod:`appserver.changes`), so the feed announces exactly the files a GET would return."""

from __future__ import annotations

import os

__all__ = ["inside_root", "make_etag", "url_segments"]


def make_etag(st: os.stat_result) -> str:
    """Strong validator from inode, size and mtime (ns), all in hex."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def url_segments(path: str) -> list[str] | None:
    """Split an absolute URL path into safe segments, or None if it must be refused."""
    if not path.startswith("/") or "\x00" in path or "\\" in path:
        return None
    parts = path[1:].split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return parts


def inside_root(root: str, real: str) -> bool:
    """Whether the resolved path ``real`` lies under ``root`` (the root itself not included)."""
    return real != root and os.path.commonpath((root, real)) == root
