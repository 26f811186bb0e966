"""appserver.h3.pacing: a sender waits while its stream's unacknowledged bytes are above the high
mark and goes on once ACKs bring them to the low mark -- on a real aioquic client/server pair whose
datagrams the test carries between them by hand (no sockets), so every step is deterministic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from appserver.h3.pacing import HIGH_WATER, LOW_WATER, Pacer
from tests.support.certs import make_self_signed_cert

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)


def exchange(a: QuicConnection, b: QuicConnection, now: float, rounds: int = 1) -> None:
    for _ in range(rounds):
        for data, _addr in a.datagrams_to_send(now=now):
            b.receive_datagram(data, CLIENT_ADDR if a._is_client else SERVER_ADDR, now=now)
        for data, _addr in b.datagrams_to_send(now=now):
            a.receive_datagram(data, CLIENT_ADDR if b._is_client else SERVER_ADDR, now=now)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[QuicConnection, QuicConnection]:
    cert = make_self_signed_cert(tmp_path)
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["test"],
                                      max_stream_data=64 * 2**20, max_data=64 * 2**20)
    server_config.load_cert_chain(str(cert.certfile), str(cert.keyfile))
    client_config = QuicConfiguration(is_client=True, alpn_protocols=["test"], server_name="127.0.0.1")
    client_config.load_verify_locations(str(cert.certfile))
    client = QuicConnection(configuration=client_config)
    server = QuicConnection(configuration=server_config,
                            original_destination_connection_id=client.original_destination_connection_id)
    client.connect(SERVER_ADDR, now=0.0)
    exchange(client, server, 0.0, rounds=4)
    assert client._handshake_complete and server._handshake_complete
    return client, server


async def test_waits_above_high_water_until_acks_bring_it_down(pair: tuple[QuicConnection, QuicConnection]) -> None:
    client, server = pair
    pacer = Pacer(client)
    stream = client.get_next_available_stream_id()
    client.send_stream_data(stream, b"x" * (HIGH_WATER // 2))
    assert pacer.backlog(stream) == HIGH_WATER // 2
    await asyncio.wait_for(pacer.wait(stream), 1)  # below the high mark: no wait

    client.send_stream_data(stream, b"y" * HIGH_WATER)
    assert pacer.backlog(stream) == HIGH_WATER + HIGH_WATER // 2
    waiter = asyncio.ensure_future(pacer.wait(stream))
    second = asyncio.ensure_future(pacer.wait(stream))  # two tasks on one stream: both released
    await asyncio.sleep(0)
    pacer.poke()  # nothing acked yet: both keep waiting
    await asyncio.sleep(0)
    assert not waiter.done() and not second.done()

    now = 0.0
    for _ in range(2000):  # the data goes out and comes back acked, a window at a time
        backlog = pacer.backlog(stream)
        assert backlog is not None
        if backlog <= LOW_WATER:
            break
        now += 0.001
        exchange(client, server, now)
    pacer.poke()
    await asyncio.wait_for(asyncio.gather(waiter, second), 1)
    assert (pacer.backlog(stream) or 0) <= LOW_WATER


async def test_a_reset_stream_or_a_closed_connection_releases_the_sender(
        pair: tuple[QuicConnection, QuicConnection]) -> None:
    client, _server = pair
    pacer = Pacer(client)
    stream = client.get_next_available_stream_id()
    client.send_stream_data(stream, b"z" * (2 * HIGH_WATER))
    waiter = asyncio.ensure_future(pacer.wait(stream))
    await asyncio.sleep(0)
    assert not waiter.done()
    client.reset_stream(stream, 0)
    assert pacer.backlog(stream) is None  # the caller sees it can no longer send
    pacer.poke()
    await asyncio.wait_for(waiter, 1)

    other = client.get_next_available_stream_id()
    client.send_stream_data(other, b"z" * (2 * HIGH_WATER))
    waiter = asyncio.ensure_future(pacer.wait(other))
    await asyncio.sleep(0)
    pacer.close()
    await asyncio.wait_for(waiter, 1)
    assert pacer.backlog(other) is None
