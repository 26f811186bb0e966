"""The aiohttp side: requests to responses, sending (sendfile, fair turns), pass-through, admin, access log."""
