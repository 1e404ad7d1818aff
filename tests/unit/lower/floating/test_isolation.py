"""Lowering is isolated: no network, no leftover files, no changed global random state."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from bridge.artifact import OnnxArtifact
from bridge.lower import lower
from bridge.lower.floating.offline import NetworkBlockedError, no_network
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB


def test_blocks_ip_connections_and_lookups() -> None:
    with no_network() as blocked:
        with pytest.raises(NetworkBlockedError):
            socket.create_connection(("127.0.0.1", 9))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(OSError):
            s.connect(("10.0.0.1", 80))
        with pytest.raises(OSError):
            socket.getaddrinfo("example.com", 443)
        with pytest.raises(OSError):  # urllib wraps the refusal in URLError (an OSError)
            urllib.request.urlopen("http://example.com/sample.npy", timeout=1)
    assert blocked.targets[:3] == ["127.0.0.1:9", "10.0.0.1:80", "example.com:443"]
    assert len(blocked.targets) == 4


def test_restores_sockets_and_allows_local_ones(tmp_path) -> None:
    before = (socket.socket.connect, socket.create_connection, socket.getaddrinfo)
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)
        with no_network() as blocked, socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
    assert blocked.targets == []
    assert (socket.socket.connect, socket.create_connection, socket.getaddrinfo) == before


def test_conversion_succeeds_offline(seq_art: OnnxArtifact, tools) -> None:
    with no_network() as blocked:
        tfl = lower(seq_art, mode="fp32")
    assert blocked.targets == []
    sqnr = tools.sqnr(seq_art, tfl)
    assert min(sqnr.values()) >= FP32_MIN_SQNR_DB, sqnr


def test_random_states_survive_lowering(seq_art: OnnxArtifact) -> None:
    import random

    import numpy as np
    import torch

    random.seed(5)
    np.random.seed(123)
    torch.manual_seed(7)
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(5)
    np.random.seed(123)
    torch.manual_seed(7)
    lower(seq_art, mode="fp32")  # onnx2tf calls set_random_seed(0) inside
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want


def test_temporary_folder_is_removed(monkeypatch, tmp_path, seq_art: OnnxArtifact) -> None:
    import tempfile

    from bridge.lower.floating import onnx2tf_driver

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = onnx2tf_driver.run_onnx2tf(seq_art.model, keep_shape_inputs=["x"])
    assert result.tflite[4:8] == b"TFL3"
    assert any(r["onnx_output_name"] == "y" for r in result.records)
    assert list(tmp_path.iterdir()) == []


_CHILD = """
import json, sys
import onnx
from bridge.artifact import OnnxArtifact
from bridge.contract import IOContract
from bridge.lower import lower
model = onnx.load(sys.argv[1])
contract = IOContract.from_dict(json.loads(open(sys.argv[2]).read()))
open(sys.argv[3], "wb").write(lower(OnnxArtifact(model, contract), mode="fp32").data)
"""


@pytest.mark.slow
def test_parallel_processes_do_not_interfere(seq_art: OnnxArtifact, tmp_path) -> None:
    import json
    import subprocess
    import sys

    model_path, contract_path = tmp_path / "m.onnx", tmp_path / "c.json"
    model_path.write_bytes(seq_art.model.SerializeToString())
    contract_path.write_text(json.dumps(seq_art.contract.to_dict()))
    outs = [tmp_path / f"out{i}.tflite" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(model_path), str(contract_path), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for out in outs
    ]
    logs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert outs[0].read_bytes() == outs[1].read_bytes() == lower(seq_art, mode="fp32").data
