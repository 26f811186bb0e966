"""The deployment files the engine here cannot run (Prometheus and Grafana come from Docker Hub) or
runs only in test-docker: each checked by its own tool or against the others. ``promtool check
config`` on config/prometheus.yml; every query of config/grafana-dashboard.json parsed by promtool
(as recording rules) and the dashboard's layout linted; ``haproxy -c`` on config/haproxy-cluster.cfg
with the compose file's environment; the compose cluster profile and the scrape targets agree."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.tools import require_promtool, require_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
NODES = ("node1", "node2", "node3")


def _dashboard() -> dict[str, Any]:
    return json.loads((CONFIG / "grafana-dashboard.json").read_text())


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_prometheus_config_is_valid_for_promtool() -> None:
    promtool = require_promtool()
    out = subprocess.run([promtool, "check", "config", str(CONFIG / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout + out.stderr, out.stdout + out.stderr


def test_prometheus_scrapes_the_proxy_and_every_node_of_the_cluster_profile() -> None:
    prom = yaml.safe_load((CONFIG / "prometheus.yml").read_text())
    [job] = [j for j in prom["scrape_configs"] if j["job_name"] == "rangeproxy"]
    targets = {t: sc.get("labels", {}) for sc in job["static_configs"] for t in sc["targets"]}
    services = _compose()["services"]
    for node in NODES:
        assert targets.get(f"{node}:8080") == {"node": node}, targets
        assert services[node]["profiles"] == ["cluster"]
        assert services[node]["environment"]["RANGEPROXY_NODE_NAME"] == node
    assert "proxy:8080" in targets and "localhost:8080" in targets
    for host in {t.split(":")[0] for t in targets} - {"localhost"}:
        assert host in services, f"scrape target {host} is not a service of docker-compose.yml"


def _queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def test_every_dashboard_query_parses_as_promql(tmp_path: Path) -> None:
    """Grafana's variables replaced by values they can take, each query becomes a recording rule,
    and ``promtool check rules`` parses them all (a typo in a query fails here, not on a screen)."""
    promtool = require_promtool()
    queries = _queries(_dashboard())
    assert len(queries) >= 20
    rules = []
    for i, (title, expr) in enumerate(queries):
        concrete = expr.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*")
        assert "$" not in concrete, f"{title}: a variable the test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and f"SUCCESS: {len(rules)} rules found" in out.stdout, out.stdout + out.stderr


def _overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def test_dashboard_json_lint() -> None:
    """What Grafana would show wrongly or refuse: ids, grid, data source, variables, the fleet row."""
    dash = _dashboard()
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert dash["uid"] == "rangeproxy" and isinstance(dash["schemaVersion"], int)
    variables = {v["name"] for v in dash["templating"]["list"]}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, (p["title"], g)
        assert p["type"] in {"row", "stat", "gauge", "timeseries", "bargauge", "text", "table"}, p["type"]
        if p["type"] in ("row", "text"):
            continue
        assert p["targets"], f"{p['title']}: no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), f"{p['title']}: refIds repeat"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
            assert used <= variables, f"{p['title']}: unknown variables {used - variables}"
    for i, a in enumerate(panels):
        for b in panels[i + 1:]:
            assert not _overlaps(a["gridPos"], b["gridPos"]), f"{a['title']!r} overlaps {b['title']!r}"
    # Rows in order of their y, each panel below its row.
    rows = sorted((p["gridPos"]["y"], p["title"]) for p in panels if p["type"] == "row")
    assert [t for _, t in rows] == [p["title"] for p in sorted(panels, key=lambda p: p["gridPos"]["y"]) if p["type"] == "row"]
    fleet = [p for p in panels if "by (instance)" in "".join(t["expr"] for t in p.get("targets", []))]
    assert len(fleet) >= 4, "the per-node (fleet) panels are missing"
    assert any("up{" in t["expr"] for p in panels for t in p.get("targets", [])), "no panel shows which nodes are up"


def test_haproxy_accepts_the_compose_front_config() -> None:
    """``haproxy -c`` on config/haproxy-cluster.cfg with the `front` service's own environment
    (node names resolved with init-addr none, as when a node is not up yet)."""
    haproxy = require_tool("haproxy", package="haproxy")
    front = _compose()["services"]["front"]
    env = {k: str(v) for k, v in front["environment"].items()}  # -c binds nothing: ":8080" is fine
    out = subprocess.run([haproxy, "-c", "-f", str(CONFIG / "haproxy-cluster.cfg")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (CONFIG / "haproxy-cluster.cfg").read_text()
    for line in ("balance uri", "hash-type consistent", "hash-balance-factor 150", "option httpchk GET /healthz"):
        assert re.search(rf"^\s+{re.escape(line)}\b", text, re.M), line
    for node in NODES:
        assert front["environment"][f"{node.upper()}_ADDR"] == f"{node}:8080"
        assert front["depends_on"][node]["condition"] == "service_healthy"
