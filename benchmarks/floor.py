"""The floor of the server library the proxy is built on: aiohttp on uvloop answering from memory.

A route and a ``web.Response`` with the asked bytes, nothing else: no cache, no files, no
accounting. Every figure of the proxy's hit path is read against it in the same rounds, so
what is the proxy's own cost and what aiohttp itself costs stay apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .harness import Server, Tools, free_port, pin_prefix

__all__ = ["FLOOR_APP", "floor_server"]

# argv: port, then the directory whose files are served (read into memory at start), or
# "@SIZE" for one generated body of SIZE bytes answered for any path.
FLOOR_APP = r"""
import os, re, sys
import uvloop
from aiohttp import web
port, source = int(sys.argv[1]), sys.argv[2]
if source.startswith("@"):
    n = int(source[1:])
    one = (bytes(range(256)) * (n // 256 + 1))[:n]
    files = None
else:
    files = {"/" + n: open(os.path.join(source, n), "rb").read() for n in os.listdir(source)}
RANGE = re.compile(r"bytes=(\d+)-(\d+)")
async def handle(request):
    body = one if files is None else files.get(request.path)
    if body is None:
        return web.Response(status=404)
    m = RANGE.fullmatch(request.headers.get("Range", ""))
    if m is None:
        return web.Response(body=body, headers={"Content-Type": "application/octet-stream",
                                                "Accept-Ranges": "bytes", "ETag": '"x"'})
    a, b = int(m[1]), min(int(m[2]), len(body) - 1)
    return web.Response(status=206, body=body[a:b + 1], headers={
        "Content-Range": f"bytes {a}-{b}/{len(body)}", "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes", "ETag": '"x"'})
async def health(request):
    return web.Response(text="ok")
app = web.Application()
app.router.add_get("/healthz", health)
app.router.add_get("/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())
"""


def floor_server(tmp: Path, tools: Tools, cpu: int | None, source: Path | int) -> Server:
    """The floor serving the files of directory ``source``, or one body of ``source`` bytes."""
    port = free_port()
    script = tmp / "floor_app.py"
    script.write_text(FLOOR_APP)
    arg = f"@{source}" if isinstance(source, int) else str(source)
    return Server(key="aiohttp", label="aiohttp from memory (floor)",
                  argv=[*pin_prefix(tools.taskset, cpu), sys.executable, str(script), str(port), arg],
                  port=port, log_path=tmp / "aiohttp.log")
