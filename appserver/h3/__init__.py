"""An HTTP/3 ASGI server prototype on aioquic (``python -m appserver --server h3``).

Plain HTTP/3 requests become ``http`` scopes (the app's GET/HEAD/range logic, unchanged); an extended
CONNECT with ``:protocol: webtransport`` becomes a ``webtransport`` scope with the message set of
aioquic's ``examples/http3_server.py`` (plus the additions the README lists). Modules:
:mod:`.pacing` (send back-pressure), :mod:`.http` (request streams), :mod:`.webtransport`
(sessions), :mod:`.server` (the QUIC protocol and ``run``).
"""
