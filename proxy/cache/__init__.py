"""The slice cache on asyncio (no aiohttp.web): store, upstream, fills, runs, reads; ``Engine`` is its facade."""
