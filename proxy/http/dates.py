"""HTTP-date (RFC 9110 §5.6.7) parsing and formatting, pure and strict.

Kept apart from ``email.utils`` (which pulls in ``socket``) so the pure core
stays import-light, and strict so "exact match" comparisons mean something.
"""

from __future__ import annotations

import calendar
import re
import time

__all__ = ["parse_http_date", "format_http_date"]

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_T = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
_IMF = re.compile(r"[A-Z][a-z]{2}, ([0-9]{2}) ([A-Z][a-z]{2}) ([0-9]{4}) " + _T + r" GMT", re.ASCII)
# obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
_RFC850 = re.compile(r"[A-Z][a-z]{5,8}, ([0-9]{2})-([A-Z][a-z]{2})-([0-9]{2}) " + _T + r" GMT", re.ASCII)
# obsolete asctime: Sun Nov  6 08:49:37 1994
_ASCTIME = re.compile(r"[A-Z][a-z]{2} ([A-Z][a-z]{2}) ([ 0-9][0-9]) " + _T + r" ([0-9]{4})", re.ASCII)


def parse_http_date(value: str | None) -> int | None:
    """Seconds since the epoch, or None when ``value`` is not an HTTP-date."""
    if not value:
        return None
    value = value.strip(" \t")
    if m := _IMF.fullmatch(value):
        day, mon, year, hh, mm, ss = m.groups()
    elif m := _RFC850.fullmatch(value):
        day, mon, yy, hh, mm, ss = m.groups()
        # RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is in the past.
        year_now = time.gmtime().tm_year
        year = str(2000 + int(yy) if 2000 + int(yy) <= year_now + 50 else 1900 + int(yy))
    elif m := _ASCTIME.fullmatch(value):
        mon, day, hh, mm, ss, year = m.groups()
    else:
        return None
    month = _MONTHS.get(mon)
    if month is None:
        return None
    try:
        parts = (int(year), month, int(day), int(hh), int(mm), int(ss))
        if not (1 <= parts[2] <= 31 and parts[3] < 24 and parts[4] < 60 and parts[5] < 61):
            return None
        return calendar.timegm(parts + (0, 0, 0))
    except (ValueError, OverflowError):
        return None


def format_http_date(epoch: float) -> str:
    """IMF-fixdate for ``epoch`` seconds (the only form a sender generates)."""
    t = time.gmtime(epoch)
    mon = next(k for k, v in _MONTHS.items() if v == t.tm_mon)
    return f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {mon} {t.tm_year:04d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
