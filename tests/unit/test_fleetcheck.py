"""cluster/fleetcheck.py's own parts that need no fleet: the objects it writes and reads back, and its
reading of HAProxy's stats CSV (the whole check runs in tests/integration/test_cluster_loopback.py
and in `make test-cluster`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import fleetcheck
from cluster.fleetcheck import Fleet, object_bytes, write_objects


def test_objects_are_1_to_8_kib_distinct_and_the_same_on_every_call(tmp_path: Path) -> None:
    sizes = [len(object_bytes(i)) for i in range(200)]
    assert min(sizes) >= 1024 and max(sizes) <= 8 * 1024 and len(set(sizes)) > 100
    assert len({object_bytes(i) for i in range(200)}) == 200
    write_objects(tmp_path / "m", 5, 1)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["fleet-0000.bin", "fleet-0001.bin", "fleet-0002.bin", "fleet-0003.bin", "fleet-0004.bin",
                     "fleet-big-0.bin"]
    assert (tmp_path / "m" / "fleet-0003.bin").read_bytes() == object_bytes(3)
    assert (tmp_path / "m" / "fleet-big-0.bin").stat().st_size == 2**20 + 1


CSV = """# pxname,svname,qcur,status,weight
front,FRONTEND,,OPEN,
rangeproxy,node1,0,UP,1
rangeproxy,node2,0,DOWN 1/2,1
rangeproxy,node3,0,MAINT,1
rangeproxy,BACKEND,0,UP,2
other,node1,0,DOWN,1
"""


def test_states_are_read_from_the_backend_rows_of_the_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleetcheck, "_get", lambda url, headers=None: (200, {}, CSV.encode()))
    fleet = Fleet("http://f", "http://s", {"node1": "http://n1", "node2": "http://n2", "node3": "http://n3"})
    assert fleet.states() == {"node1": "UP", "node2": "DOWN", "node3": "MAINT"}


def test_a_missing_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert fleetcheck.main(["--front", "http://127.0.0.1:1"]) == 2
    assert "--front, --stats and --node are needed" in capsys.readouterr().err
