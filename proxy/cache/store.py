"""The slice store: the only module that touches diskcache, always off the event loop.

diskcache is synchronous SQLite plus one plain file per value; every call runs on
a small thread pool owned here. Slices are values-as-files (``disk_min_file_size=0``),
tagged with their object's URL so ``evict(tag)`` drops a whole object at once.
A slice read checks the file's length against what the slice must hold: a
truncated or unreadable entry is evicted and reported as a miss, never served.

Every key carries the cache format (:data:`FORMAT`); see :func:`_drop_other_formats`
for what happens to a directory holding entries of another format.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pickle
import re
import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from functools import partial
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

import diskcache
from diskcache.core import MODE_BINARY  # type: ignore[import-untyped]

from proxy.cache import eviction
from proxy.cache.checksum import Crc32
from proxy.cache.fileindex import FileIndex
from proxy.cache.interned import compact
from proxy.cache.touches import Touches
from proxy.cache.writability import CacheWritability
from proxy.core.representation import ObjectMeta
from proxy.core.variants import SEPARATOR
from proxy.core.slices import Unit

__all__ = ["SliceStore", "FORMAT", "meta_key", "slice_key", "slice_id_of", "meta_record", "SLICE_KEYS"]

log = logging.getLogger("rangeproxy.store")
REBUILD_INTERVAL = 60.0  # seconds at least between rebuilds of the file index (see flush_touches)
SQLITE_CACHE_PAGES = 1024  # 4 MiB of pages per connection
STALE_SHARE = 0.25  # the file index is rebuilt when it holds this much more than the store
T = TypeVar("T")
SliceId = tuple[str, str, Unit]  # (url, validator, slice index or (slice, block))
READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)  # no inode write per read


# The cache format: what is stored under which key. Bump it whenever a key's shape or a
# value's meaning changes (a new kind of entry, another metadata record, other slice keys).
#
# The version is part of every key ("m3\x00<url>", "s3\x00<url>\x00<validator>\x00<unit>"),
# not only a field in the values, because slices are raw bytes with no room for a field:
# with it in the key, a lookup of this format can only ever find an entry written in this
# format, so an older or newer entry cannot be misread even before it is dropped. The
# \x00 after the number keeps the prefixes apart ("m1\x00" is not a prefix of "m10\x00").
# Format 0 is the unversioned "m\x00<url>" / "s\x00..." of before. The metadata record
# carries the format as well (see meta_record), so a record is checked, not trusted.
# 2: the metadata record holds the origin's stored header fields (ObjectMeta.headers).
# 3: ObjectMeta.answer (objects stored whole without a strong validator), Age kept in the fields.
# 4: the validator of a strong ETag holds the length too ("e:<length>:<etag>"; ObjectMeta.validator).
FORMAT = 4
_META = f"m{FORMAT}\x00"
_SLICE = f"s{FORMAT}\x00"
_PREFIXES = (_META, _SLICE)  # every key this format writes starts with one of these, sorted
_KEY_FORMAT = re.compile(r"[a-z]+(\d*)\x00")  # "<kind><format>\x00": the format of a key


def _done_future() -> Future[None]:
    f: Future[None] = Future()
    f.set_result(None)
    return f


def _end(prefix: str) -> str:
    """The first string after every key that starts with ``prefix`` (which ends in \\x00)."""
    return prefix[:-1] + "\x01"


SLICE_KEYS = (_SLICE, _end(_SLICE))  # every slice key k of this format: lo <= k < hi


def _other_format_ranges() -> list[tuple[str, tuple[str, ...]]]:
    """SQL conditions, with their arguments, that together match every key not of FORMAT.

    The gaps between this format's key ranges: each is one range of the key index, so
    whether a directory holds anything else costs a few index lookups, not a scan.
    (SQLite orders integers before text and blobs after it: those keys fall in the
    first and last gap.)
    """
    bounds = sorted((p, _end(p)) for p in _PREFIXES)
    gaps: list[tuple[str, tuple[str, ...]]] = [("key < ?", (bounds[0][0],))]
    gaps += [("key >= ? AND key < ?", (hi, lo)) for (_, hi), (lo, _) in zip(bounds, bounds[1:])]
    gaps.append(("key >= ?", (bounds[-1][1],)))
    return gaps


def _format_of(key: object) -> int | None:
    """The format a foreign key was written in (0 = unversioned), None if unrecognised."""
    m = _KEY_FORMAT.match(key) if isinstance(key, str) else None
    return None if m is None else int(m.group(1) or 0)


def slice_key(url: str, validator: str, index: Unit) -> str:
    """A whole slice ``i`` or a block ``(i, k)`` of it (``i.k``)."""
    unit = index if isinstance(index, int) else f"{index[0]}.{index[1]}"
    return f"{_SLICE}{url}\x00{validator}\x00{unit}"


def slice_id_of(key: str) -> SliceId | None:
    """(url, validator, unit) of a key :func:`slice_key` made; None for any other key.
    (A validator holds no NUL; a URL might: it is what is left.)"""
    if not key.startswith(_SLICE):
        return None
    parts = key[len(_SLICE):].rsplit("\x00", 2)
    if len(parts) != 3:
        return None
    url, validator, unit = parts
    whole, dot, block = unit.partition(".")
    try:
        return (url, validator, (int(whole), int(block)) if dot else int(whole))
    except ValueError:
        return None


def meta_key(url: str) -> str:
    return f"{_META}{url}"


def meta_record(meta: ObjectMeta) -> dict[str, object]:
    """What is stored for an object: the format and ObjectMeta's fields, nested apart
    (so that no field ObjectMeta may gain can collide with the version)."""
    return {"format": FORMAT, "meta": meta.to_dict()}


def _meta_from_record(raw: object, url: str) -> ObjectMeta | str:
    """The ObjectMeta of a stored record, or why the record cannot be used."""
    if not isinstance(raw, dict):
        return f"meta record is a {type(raw).__name__}"
    if raw.get("format") != FORMAT:
        return f"meta record of format {raw.get('format')!r}, not {FORMAT}"
    try:
        meta = ObjectMeta.from_dict(raw["meta"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"bad meta record ({type(exc).__name__}: {exc})"
    if meta.url != url:
        return f"meta record of {meta.url!r}"
    return compact(meta)


def held_fd_budget() -> int:
    """How many slice files to hold open: raise the soft fd limit to the hard one, use half.

    Every held file is a hit served with sendfile and no index lookup; the other half of
    the limit is for connections.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    limit = 65536 if soft == resource.RLIM_INFINITY else soft
    return max(256, min(limit // 2, 32768))


def _other_format_keys(cache: diskcache.Cache) -> bool:
    return any(cache._sql(f"SELECT 1 FROM Cache WHERE {cond} LIMIT 1", args).fetchone()
               for cond, args in _other_format_ranges())


# No marker is needed: whether the directory holds anything but FORMAT's keys is a
# few lookups of the key index (the gaps between this format's key ranges), done at
# every start. It looks at the entries themselves, so nothing can get out of step with
# them: not an evicted or deleted marker, not entries an older proxy wrote after a
# rollback, not a cache.db copied in. Only the rare start that finds such entries
# deletes them (by key range, one transaction per 100 entries, files with them).
# That never touches an entry of this format, so two workers starting at once on one
# directory cannot wipe each other's fresh entries whatever the interleaving; a lock
# on the directory only makes one of them do the deleting and log it, once.
def _drop_other_formats(cache: diskcache.Cache, directory: str) -> None:
    """Delete every entry not of :data:`FORMAT` (format 0 = before keys had one)."""
    if not _other_format_keys(cache):
        return
    dfd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)  # another worker may be at it: wait, then look again
        dropped: Counter[int | None] = Counter()
        for cond, args in _other_format_ranges():
            while True:
                with cache._transact(retry=True) as (sql, cleanup):
                    rows = sql(f"SELECT rowid, key, filename FROM Cache WHERE {cond} LIMIT 100",
                               args).fetchall()
                    if not rows:
                        break
                    sql("DELETE FROM Cache WHERE rowid IN (%s)" % ",".join(str(r[0]) for r in rows))
                    for _, key, filename in rows:
                        dropped[_format_of(key)] += 1
                        cleanup(filename)  # the value's file, once the transaction commits
    finally:
        os.close(dfd)  # releases the lock
    if dropped:
        kinds = sorted(f for f in dropped if f is not None)
        what = ", ".join([f"{dropped[f]} of format {f}" for f in kinds]
                         + ([f"{dropped[None]} unrecognised"] if None in dropped else []))
        log.warning("cache %s: dropped %d entries not of cache format %d (%s): this proxy cannot "
                    "read them", directory, sum(dropped.values()), FORMAT, what)


@dataclass(frozen=True, slots=True)
class _Written:
    """A value's file, already written (by :meth:`SliceDisk.write`): ``set`` only records it."""

    filename: str  # relative to the cache directory, as diskcache stores it
    size: int
    crc: int  # CRC-32 of the bytes written (proxy.cache.checksum)


class SliceDisk(diskcache.Disk):
    """diskcache's files, written before their row is: a slice is written by :meth:`write`
    outside the store's put lock, so that the lock (and SQLite's write lock) is held for
    the row alone, not for a megabyte of writes. (Its names stay diskcache's, 65,536
    directories: fewer, measured, made creating each file cost more than the mkdirs saved.)

    A slice's row keeps the CRC-32 of its bytes in the ``value`` column, which diskcache
    leaves unread for a value kept in a file (``MODE_BINARY``): the scrubber reads it
    (:mod:`proxy.cache.scrubber`). Rows of before had NULL there: no checksum, length checked."""

    def store(self, value: Any, read: bool, key: Any = diskcache.UNKNOWN) -> tuple[int, int, str | None, Any]:
        if isinstance(value, _Written):
            return value.size, MODE_BINARY, value.filename, value.crc
        stored: tuple[int, int, str | None, Any] = super().store(value, read, key)
        return stored

    def write(self, chunks: Iterable[bytes]) -> _Written:
        """A new file holding ``chunks``, for a ``set`` to record (or :meth:`remove` to drop)."""
        filename, full_path = self.filename()
        crc = Crc32(chunks)
        try:
            size = self._write(full_path, iter(crc), "xb")
        except BaseException:  # a full disk: no partial file left behind
            with contextlib.suppress(OSError):
                os.remove(full_path)
            raise
        return _Written(filename, size, crc.value)


class SliceStore:
    """Slices and object metadata in one diskcache directory, LRU-evicted by size."""

    def __init__(self, directory: str, size_limit: int, threads: int = 4, max_fds: int | None = None,
                 load_in_background: bool = False) -> None:
        self._cache = diskcache.Cache(
            directory,
            disk=SliceDisk,
            size_limit=size_limit,
            eviction_policy="least-recently-used",
            disk_min_file_size=0,  # every value is a plain file: a hit can be read by offset
            tag_index=True,  # evict(tag=url) drops one object's slices in one indexed query
            cull_limit=0,  # never inside set(): the store culls (proxy.cache.eviction) and tells the index
            statistics=False,
            # SQLite's memory per connection (one per store thread): the hot path makes no
            # query, so a small page cache and no mmap cost nothing there, and keep a million
            # objects' key scans from settling in RSS (diskcache's defaults: 32 MiB + 64 MiB).
            sqlite_cache_size=SQLITE_CACHE_PAGES,
            sqlite_mmap_size=0,
        )
        self._disk: SliceDisk = self._cache.disk
        self.cache: diskcache.Cache = self._cache  # for the scrubber's reads on its own thread (proxy.cache.scrubber)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="store")
        self.corrupt_dropped = 0
        self.evictions = 0  # entries culled to stay under size_limit (LRU)
        self._size_limit = size_limit
        self._cull_lock = threading.Lock()
        self._fds: OrderedDict[SliceId, int] = OrderedDict()  # open slice files, LRU
        self.fd_closes = 0  # held fds closed so far: a hit sending from held fds checks it did not move
        self._max_fds = max_fds if max_fds is not None else held_fd_budget()
        self.touches = Touches()  # uses served without diskcache, for its LRU
        self._directory = directory
        self.writability = CacheWritability(directory, reconnect=self._cache.close)  # (proxy.cache.writability)
        _drop_other_formats(self._cache, directory)
        # Every entry's file, so that a hit finds it without SQLite (proxy.cache.fileindex).
        self.files = FileIndex(directory)
        self._rebuilt = time.monotonic()
        # In the background (the proxy): /healthz answers at once; until it is loaded a hit
        # whose file the index lacks is looked up in SQLite, as one another worker wrote.
        self.index_loaded: Future[None] = (self._pool.submit(self._load_index) if load_in_background
                                           else _done_future())
        if not load_in_background:
            self._load_index()

    def _load_index(self) -> None:
        def rows() -> Iterable[tuple[object, object]]:  # streamed from the cursor: no list of a million rows
            for prefix in _PREFIXES:
                yield from self._cache._sql("SELECT key, filename FROM Cache WHERE key >= ? AND key < ?",
                                            (prefix, _end(prefix)))
        t0 = time.monotonic()
        self.files.load(rows(), expected=len(self._cache))
        log.info("file index of %s: %d entries in %.1f s", self._directory, len(self.files), time.monotonic() - t0)

    def _filename(self, key: str) -> str | None:
        row = self._cache._sql("SELECT filename FROM Cache WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.writability.fresh, fn, *args)

    # --- metadata -----------------------------------------------------------

    def _known_meta(self, key: str, url: str, use: bool = True) -> ObjectMeta | None:
        """The record read straight from its file, when the index knows it (no SQLite)."""
        path = self.files.path(key)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                raw = pickle.load(f)
        except FileNotFoundError:  # evicted, or rewritten by another worker: SQLite knows
            self.files.forget(key)
            return None
        except Exception:  # noqa: BLE001 - damaged: the SQLite path drops it
            return None
        meta = _meta_from_record(raw, url)
        if isinstance(meta, str):
            return None
        if use:
            self.touches.add(key)
        return meta

    def _get_meta(self, url: str, use: bool = True) -> ObjectMeta | None:
        key = meta_key(url)
        known = self._known_meta(key, url, use)
        return known if known is not None else self._stored_meta(key, url)

    def _stored_meta(self, key: str, url: str) -> ObjectMeta | None:
        """The record through SQLite (diskcache's get): a key the file index lacks, or a damaged file."""
        try:
            raw = self._cache.get(key)
        except diskcache.Timeout:
            raise
        except Exception as exc:  # noqa: BLE001 - a value that does not unpickle is damaged
            if not (isinstance(exc, sqlite3.OperationalError) and self.writability.failed(exc)):  # a ro/full disk
                self._drop_corrupt(key, f"unreadable meta record ({type(exc).__name__})")
            return None
        if raw is None:
            return None
        meta = _meta_from_record(raw, url)
        if isinstance(meta, str):
            self._drop_corrupt(key, meta)
            return None
        return meta

    async def get_meta(self, url: str) -> ObjectMeta | None:
        # A record the index knows is one small file read, done here: cheaper than a thread hop.
        key = meta_key(url)
        known = self._known_meta(key, url)
        return known if known is not None else await self._run(self._stored_meta, key, url)

    def _set_counted(self, key: str, value: object, tag: str, read: bool = False) -> None:
        """A write, then the cull it calls for: the keys that left are forgotten by the index."""
        self._cache.set(key, value, tag=tag, read=read)
        if self._cull_lock.acquire(blocking=False):  # one thread culls at a time; the others need not wait
            try:
                gone = eviction.cull(self._cache, self._size_limit, partial(eviction.used_since, self.files))
            finally:
                self._cull_lock.release()
            if gone:
                self.evictions += len(gone)
                self.files.forget_many(gone)

    def _put_meta(self, meta: ObjectMeta) -> None:
        key = meta_key(meta.url)
        self._set_counted(key, meta_record(meta), meta.url)
        self.files.note(key, self._filename(key))  # a slice's file is noted by the _open after its put

    async def put_meta(self, meta: ObjectMeta) -> bool:  # False: not written (proxy.cache.writability)
        return (await self._run(self.writability.attempt, self._put_meta, meta))[0]

    def _object_count(self) -> int:
        # Metadata keys are "m<FORMAT>\x00<url>": one range scan of the key index.
        row = self._cache._sql("SELECT COUNT(*) FROM Cache WHERE key >= ? AND key < ?", (_META, _end(_META))).fetchone()
        return int(row[0])

    async def object_count(self) -> int:
        """Objects with metadata in the store."""
        return await self._run(self._object_count)

    # --- slices ---------------------------------------------------------------
    #
    # Hot path: a hit is an ``os.pread`` (or a sendfile) on a slice file we already hold
    # open, on the event loop, with no SQLite and no thread hop. Slice files are
    # immutable for their (url, validator, index), so an fd stays right even after
    # diskcache evicts and unlinks its file. Hits are reported to diskcache's LRU in
    # batches so eviction order still follows use.

    def holds(self, url: str, validator: str, index: Unit) -> bool:
        """Is this unit's file held open? (a probe: no LRU touch)"""
        return (url, validator, index) in self._fds

    def cached_fd(self, url: str, validator: str, index: Unit) -> int | None:
        key = (url, validator, index)
        fd = self._fds.get(key)
        if fd is not None:
            self._fds.move_to_end(key)
            self.touches.add(key)
        return fd

    def held_units(self, url: str, validator: str) -> list[Unit]:
        """Units of one object version whose files are held open (cheap, in memory)."""
        return [k[2] for k in self._fds if k[0] == url and k[1] == validator]

    def _remember_fd(self, key: SliceId, fd: int) -> None:
        old = self._fds.pop(key, None)
        if old is not None:
            self.fd_closes += 1
            os.close(old)
        self._fds[key] = fd
        while len(self._fds) > self._max_fds:
            _, victim = self._fds.popitem(last=False)
            self.fd_closes += 1
            os.close(victim)

    def _forget_fd(self, key: SliceId) -> None:
        fd = self._fds.pop(key, None)
        if fd is not None:
            self.fd_closes += 1
            os.close(fd)

    def _open_known(self, url: str, validator: str, index: Unit, size: int, use: bool = True) -> int | None:
        """Open a slice file the index knows (no SQLite); its length checked. ``use``: a read
        (for the LRU), not the open after the file's own write."""
        key = slice_key(url, validator, index)
        path = self.files.path(key)
        if path is None:
            return None
        try:
            # O_NOATIME: the first read of a file would otherwise write its inode (relatime).
            fd = os.open(path, READ_FLAGS)
        except FileNotFoundError:  # evicted (a cull, another worker): a miss
            self.files.forget(key)
            return None
        except PermissionError:  # O_NOATIME on a file of another user
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        except OSError:
            return None
        try:
            actual = os.fstat(fd).st_size
        except OSError:
            actual = -1
        if actual != size:
            os.close(fd)
            self.files.forget(key)
            self._pool.submit(self._drop_corrupt, key, f"length {actual} != {size}")
            return None
        if use:
            self.touches.add((url, validator, index))
        return fd

    def hold_known(self, url: str, validator: str, index: Unit, size: int) -> int | None:
        """Open and hold a slice file the index knows, without an await (a hit's fast path)."""
        fd = self._open_known(url, validator, index, size)
        if fd is not None:
            self._remember_fd((url, validator, index), fd)
        return fd

    def _open(self, url: str, validator: str, index: Unit, size: int) -> int | None:
        """Find a slice file through diskcache (this touches its LRU) and dup its fd."""
        key = slice_key(url, validator, index)
        try:
            handle = self._cache.get(key, read=True)
        except (OSError, sqlite3.OperationalError) as exc:  # sqlite3: the LRU update, on a full/ro disk
            if not (isinstance(exc, sqlite3.OperationalError) and self.writability.failed(exc)):
                self._drop_corrupt(key, "unreadable")
            return None
        if handle is None:
            return None
        with handle:
            try:
                actual = os.fstat(handle.fileno()).st_size
            except (OSError, ValueError, AttributeError):
                actual = -1
            if actual != size:
                self._drop_corrupt(key, f"length {actual} != {size}")
                return None
            self.files.note(key, getattr(handle, "name", None))
            return os.dup(handle.fileno())

    async def open_slice(self, url: str, validator: str, index: Unit, size: int) -> int | None:
        """An fd of a stored slice of ``size`` bytes, or None (miss, or corrupt and dropped)."""
        fd = self.cached_fd(url, validator, index)
        if fd is not None:
            return fd
        # A file the index knows is opened here (a page-cached open is cheaper than a thread hop).
        fd = self._open_known(url, validator, index, size)
        if fd is None:
            fd = await self._run(self._open, url, validator, index, size)
        if fd is None:
            return None
        self._remember_fd((url, validator, index), fd)
        return fd

    def checked_fd(self, url: str, validator: str, index: Unit, size: int) -> int | None:
        """A held slice fd whose file still has ``size`` bytes; a damaged one is dropped."""
        fd = self.cached_fd(url, validator, index)
        if fd is None:
            return None
        try:
            actual = os.fstat(fd).st_size
        except OSError:
            actual = -1
        if actual == size:
            return fd
        self.drop(url, validator, index, f"length {actual} != {size}")
        return None

    def pread(self, url: str, validator: str, index: Unit, fd: int, lo: int, hi: int) -> bytes | None:
        """Bytes ``[lo, hi)`` of a slice whose fd came from :meth:`checked_fd` or
        :meth:`open_slice` (length checked there); a short read means it was damaged since."""
        try:
            data = os.pread(fd, hi - lo, lo)
        except OSError as exc:
            data = b""
            log.warning("slice read failed: %s", exc)
        if len(data) == hi - lo:
            return data
        self.drop(url, validator, index, f"short read {len(data)} of {hi - lo}")
        return None

    def drop(self, url: str, validator: str, index: Unit, why: str) -> None:
        """Forget a damaged slice now; delete it from diskcache in the background."""
        self._forget_fd((url, validator, index))
        self._pool.submit(self._drop_corrupt, slice_key(url, validator, index), why)

    def _drop_corrupt(self, key: str, why: str) -> None:
        self.files.forget(key)
        self.corrupt_dropped += 1
        log.warning("corrupt cache entry dropped (%s): %r", why, key.replace("\x00", " "))
        try:
            self._cache.delete(key)
        except OSError:
            pass

    def _present(self, url: str, validator: str, indices: Iterable[Unit]) -> set[Unit]:
        return {i for i in indices if slice_key(url, validator, i) in self._cache}

    async def present(self, url: str, validator: str, indices: Iterable[int]) -> set[int]:
        """Which of ``indices`` are stored (open fds first; the rest in one thread hop)."""
        return await self.present_units(url, validator, indices)  # type: ignore[return-value]

    async def present_units(self, url: str, validator: str, units: Iterable[Unit]) -> set[Unit]:
        units = list(units)
        files = self.files
        known = {u for u in units if (url, validator, u) in self._fds or slice_key(url, validator, u) in files}
        rest = [u for u in units if u not in known]
        if rest:
            known |= await self._run(self._present, url, validator, rest)
        return known

    def _put(self, url: str, validator: str, index: Unit, data: bytes | list[bytes]) -> int | None:
        key = slice_key(url, validator, index)
        chunks = data if isinstance(data, list) else [data]  # as they came: written one by one, never joined
        written = self._disk.write(chunks)  # before the row: SQLite's write lock is held for the row alone
        try:
            self._set_counted(key, written, url, read=True)
        except BaseException:
            self._disk.remove(written.filename)
            raise
        self.files.note(key, written.filename)
        # Opened through the index, not a diskcache get: that would be a write transaction,
        # and concurrent ones wait for each other in SQLite's sleeping busy handler.
        return self._open_known(url, validator, index, written.size, use=False)

    async def put_slice(self, url: str, validator: str, index: Unit, data: bytes | list[bytes]) -> bool:
        stored, fd = await self._run(self.writability.attempt, self._put, url, validator, index, data)
        if fd is not None:
            self._remember_fd((url, validator, index), fd)
        return stored

    async def flush_touches(self) -> None:
        """Report hits served without diskcache (held fds, the file index) to its LRU, and
        rebuild the file index now and then after culls (called periodically)."""
        keys = [k if isinstance(k, str) else slice_key(*k) for k in self.touches.due(time.monotonic())
                if isinstance(k, (str, tuple))]
        if keys and self.writability.writable:  # uses seen while it is not are not reported
            await self._run(self.writability.noting, eviction.report_uses, self._cache, self.files, keys)
        now = time.monotonic()
        if now - self._rebuilt >= REBUILD_INTERVAL:
            self._rebuilt = now
            entries = await self._run(len, self._cache)  # Settings.count: one row
            if len(self.files) > entries * (1 + STALE_SHARE) + 1000:  # others' culls left dead entries
                await self._run(self._load_index)

    def forget_fds(self, url: str) -> None:
        """Close the held files of one object (another worker dropped it)."""
        for key in [k for k in self._fds if k[0] == url]:
            self._forget_fd(key)
        self.touches.forget(url)

    def _keys_under(self, prefix: str) -> list[str]:
        """The object keys that start with ``prefix`` (metadata records): one index range."""
        lo = meta_key(prefix)
        rows = self._cache._sql("SELECT key FROM Cache WHERE key >= ? AND key < ?", (lo, lo + "\U0010ffff")).fetchall()
        return [key[len(_META):] for (key,) in rows if isinstance(key, str)]

    def _recent_metas(self, prefix: str, limit: int) -> list[ObjectMeta]:
        lo = meta_key(prefix)
        rows = self._cache._sql("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY access_time DESC LIMIT ?",
                                (lo, lo + "\U0010ffff", limit)).fetchall()
        found = (self._get_meta(key[len(_META):], use=False) for (key,) in rows if isinstance(key, str))  # not a use
        return [m for m in found if m is not None]

    async def recent_metas(self, prefix: str, limit: int) -> list[ObjectMeta]:
        """The metadata of the ``limit`` most recently used objects under ``prefix``, most recent first."""
        return await self._run(self._recent_metas, prefix, limit)

    async def variant_keys(self, url: str) -> list[str]:
        """The keys of the stored variants of ``url`` (proxy.core.variants)."""
        return await self._run(self._keys_under, url + SEPARATOR)

    async def keys_under(self, prefix: str) -> list[str]:
        """Every stored object key (URLs and variants) that starts with ``prefix``."""
        return await self._run(self._keys_under, prefix)

    async def evict_object(self, url: str) -> int:
        """Drop every slice and the metadata of one object (all versions)."""
        self.forget_fds(url)
        self.files.forget(meta_key(url))
        gone = await self._run(eviction.evict_tag, self._cache, url)
        self.files.forget_many(gone)
        return len(gone)

    async def volume(self) -> tuple[int, int]:
        """(bytes on disk, entries)."""
        return await self._run(lambda: (self._cache.volume(), len(self._cache)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.fd_closes += len(self._fds)
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._cache.close()
