"""The loopback cluster's haproxy.cfg (cluster.loopback.haproxy_config): the README's backend, one
checked server per node, the admin socket the cluster reads HAProxy's view from."""

from __future__ import annotations

from pathlib import Path

from cluster.loopback import ClusterOptions, LoopbackCluster, haproxy_config


def test_the_backend_hashes_the_path_consistently_with_bounded_load_and_checks() -> None:
    cfg = haproxy_config(8080, [("node1", 9001), ("node2", 9002)], Path("/run/x/haproxy.sock"), fall=3)
    lines = [line.split("#")[0].strip() for line in cfg.splitlines()]
    for want in ("bind 127.0.0.1:8080", "balance uri", "hash-type consistent", "hash-balance-factor 150",
                 "option httpchk GET /healthz", "http-check expect status 200", "option forwardfor",
                 "default-server fall 3 rise 1", "server node1 127.0.0.1:9001 check inter 1s",
                 "server node2 127.0.0.1:9002 check inter 1s",
                 "stats socket /run/x/haproxy.sock mode 600 level admin"):
        assert want in lines, want
    assert sum(line.startswith("server ") for line in lines) == 2


def test_a_cluster_needs_a_node_and_a_short_socket_path(tmp_path: Path) -> None:
    import pytest

    from cluster.loopback import ClusterError

    with pytest.raises(ValueError):
        LoopbackCluster("http://127.0.0.1:1", tmp_path, 0)
    with pytest.raises(ClusterError, match="too long"):
        LoopbackCluster("http://127.0.0.1:1", tmp_path / ("d" * 100), 3, ClusterOptions())


def test_a_tls_front_binds_with_the_pem_and_offers_h2_then_http11() -> None:
    cfg = haproxy_config(8443, [("node1", 9001)], Path("/run/x/haproxy.sock"), tls_pem=Path("/run/x/front.pem"))
    lines = [line.split("#")[0].strip() for line in cfg.splitlines()]
    assert "bind 127.0.0.1:8443 ssl crt /run/x/front.pem alpn h2,http/1.1" in lines
    assert "server node1 127.0.0.1:9001 check inter 1s" in lines  # the nodes: plain HTTP/1.1


def test_a_tls_front_writes_chain_and_key_into_one_pem_and_needs_both(tmp_path: Path) -> None:
    import pytest

    from cluster.loopback import ClusterError

    (tmp_path / "c.pem").write_text("CHAIN\n")
    (tmp_path / "k.pem").write_text("KEY\n")
    both = LoopbackCluster("http://127.0.0.1:1", tmp_path, 1,
                           ClusterOptions(tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem"))
    assert both.front_url.startswith("https://")
    pem = both._front_pem()
    assert pem is not None and pem.read_text() == "CHAIN\nKEY\n"
    assert pem.stat().st_mode & 0o077 == 0
    half = LoopbackCluster("http://127.0.0.1:1", tmp_path, 1, ClusterOptions(tls_cert=tmp_path / "c.pem"))
    with pytest.raises(ClusterError, match="both"):
        half._front_pem()


def test_the_stats_page_is_a_frontend_of_its_own_only_when_asked() -> None:
    sock = Path("/run/x/haproxy.sock")
    assert "frontend stats" not in haproxy_config(8080, [("node1", 9001)], sock)
    cfg = haproxy_config(8080, [("node1", 9001)], sock, stats_port=9404)
    lines = [line.split("#")[0].strip() for line in cfg.splitlines()]
    at = lines.index("frontend stats")
    assert lines[at + 1:at + 4] == ["bind 127.0.0.1:9404", "stats enable", "stats uri /"]
    assert lines.index("backend rangeproxy") < at  # after the backend: its servers stay its own
