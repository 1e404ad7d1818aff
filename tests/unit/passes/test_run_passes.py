"""run_passes: the default pipeline on a real torch export, the facts log, and the guards."""

from __future__ import annotations

import io
import json

import onnx
import pytest
import torch

import bridge.passes as passes
from bridge.artifact import OnnxArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.errors import ConfigError, PassError, ShapeError
from bridge.passes import DEFAULT_PASSES, PASSES, PassResult, run_passes
from bridge.passes.check import io_signature
from bridge.registry import Registry
from bridge.runtime.tolerances import PASS_MIN_SQNR_DB

#: Conv+BN folding rounds the folded weights to float32 once; outputs are O(1).
PIPELINE_MAX_ABS = 1e-5
LOG_KEYS = {"name", "count", "max_abs_change", "min_sqnr_db", "seconds", "repeats", "nodes"}


class SmallNet(torch.nn.Module):
    """conv → bn → relu → dropout → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.drop = torch.nn.Dropout(0.3)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(x, 1))


def _exported_artifact() -> OnnxArtifact:
    torch.manual_seed(0)
    net = SmallNet()
    with torch.no_grad():  # non-trivial running statistics
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.weight.uniform_(0.5, 1.5)
    net.eval()
    buf = io.BytesIO()
    torch.onnx.export(
        net,
        (torch.randn(1, 3, 8, 8),),
        buf,
        opset_version=17,
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        do_constant_folding=False,  # keep BatchNormalization and Identity for the passes
    )
    model = _with_dropout_and_identity(onnx.load_from_string(buf.getvalue()))
    contract = IOContract(
        inputs=(TensorSpec("x", (1, 3, 8, 8), "float32", "NCHW"),),
        outputs=(TensorSpec("y", (1, 10), "float32"),),
    )
    return OnnxArtifact(model, contract)


def _with_dropout_and_identity(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add what other exporters leave behind: an inference Dropout and an Identity output."""
    graph = model.graph
    relu = next(i for i, n in enumerate(graph.node) if n.op_type == "Relu")
    relu_out = graph.node[relu].output[0]
    graph.node[relu].output[0] = "relu_raw"
    dropout = onnx.helper.make_node("Dropout", ["relu_raw"], [relu_out])
    graph.node.insert(relu + 1, dropout)
    graph.node[-1].output[0] = "logits"
    graph.node.append(onnx.helper.make_node("Identity", ["logits"], ["y"]))
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def exported() -> OnnxArtifact:
    return _exported_artifact()


def test_default_passes_on_a_torch_export(exported, g):
    ops_before = g.ops(exported.model)
    assert {"BatchNormalization", "Dropout", "Identity"} <= set(ops_before)
    out = run_passes(exported)
    ops = g.ops(out.model)
    assert not {"BatchNormalization", "Dropout", "Identity"} & set(ops), ops
    assert ops == ["Conv", "Relu", "Flatten", "Gemm"]
    assert io_signature(out.model) == io_signature(exported.model)
    assert out.stage == "passes" and out.contract == exported.contract
    assert g.diff(g.ort(exported.model), g.ort(out.model)) <= PIPELINE_MAX_ABS
    log = out.facts["passes"]
    json.dumps(log)  # facts must be JSON-serialisable
    assert [e["name"] for e in log] == list(DEFAULT_PASSES)
    assert all(e.keys() >= LOG_KEYS for e in log)
    assert all(e["min_sqnr_db"] >= PASS_MIN_SQNR_DB for e in log)
    counts = {e["name"]: e["count"] for e in log[:7]}
    assert counts["fuse_conv_bn"] == 1
    assert counts["fold_constants"] >= 2  # the Identity nodes torch puts on the weights
    assert log[-1]["nodes"] == 4
    assert log[6]["hints"] == {"activations": {"relu": 1}, "fusable_into_producer": 1}


def _corrupt_weight(model: onnx.ModelProto) -> PassResult:
    """A broken pass: doubles the first float initializer."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    t = next(t for t in copy.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    t.CopyFrom(onnx.numpy_helper.from_array(2 * onnx.numpy_helper.to_array(t), t.name))
    return PassResult(copy, True, 1)


def _rename_output(model: onnx.ModelProto) -> PassResult:
    """A broken pass: renames the graph output (values unchanged)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    old = copy.graph.output[0].name
    copy.graph.output[0].name = "renamed"
    for node in copy.graph.node:
        node.output[:] = ["renamed" if o == old else o for o in node.output]
    return PassResult(copy, True, 1)


def _dangling_input(model: onnx.ModelProto) -> PassResult:
    """A broken pass: makes a node read a tensor nothing defines."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.node[-1].input[0] = "nowhere"
    return PassResult(copy, True, 1)


@pytest.fixture
def broken_registry(monkeypatch) -> Registry:
    """PASSES plus three broken passes, for this test only."""
    registry: Registry = Registry("pass")
    for name in PASSES:
        registry.register(name)(PASSES.get(name))
    registry.register("corrupt_weight")(_corrupt_weight)
    registry.register("rename_output")(_rename_output)
    registry.register("dangling_input")(_dangling_input)
    monkeypatch.setattr(passes, "PASSES", registry)
    return registry


def test_a_pass_that_changes_numbers_raises_naming_it(exported, broken_registry):
    with pytest.raises(PassError, match=r"pass 'corrupt_weight' changed output 'y': SQNR") as e:
        run_passes(exported, ["fold_constants", "corrupt_weight"])
    sqnr = float(str(e.value).split("SQNR ")[1].split(" dB")[0])
    assert sqnr < PASS_MIN_SQNR_DB


def test_broken_pass_is_not_left_registered(broken_registry):
    assert "corrupt_weight" not in PASSES  # the module-level registry is untouched


def test_a_pass_that_renames_an_output_raises(exported, broken_registry):
    with pytest.raises(PassError, match="pass 'rename_output' changed the graph outputs"):
        run_passes(exported, ["rename_output"], check=False)


def test_a_pass_that_breaks_the_graph_raises(exported, broken_registry):
    with pytest.raises(PassError, match="pass 'dangling_input' produced an invalid ONNX model"):
        run_passes(exported, ["dangling_input"], check=False)


def test_unchecked_run_logs_no_numbers(exported):
    out = run_passes(exported, ["fuse_conv_bn"], check=False)
    (entry,) = out.facts["passes"]
    assert entry["count"] == 1
    assert entry["min_sqnr_db"] is None and entry["max_abs_change"] is None


def test_unknown_pass_name(exported):
    with pytest.raises(ConfigError, match="unknown pass 'nope'"):
        run_passes(exported, ["nope"])


def test_model_must_match_the_contract(exported):
    wrong = IOContract(
        inputs=(TensorSpec("image", (1, 3, 8, 8), "float32", "NCHW"),),
        outputs=exported.contract.outputs,
    )
    with pytest.raises(ShapeError, match="do not match the contract"):
        run_passes(OnnxArtifact(exported.model, wrong))


def test_input_model_is_not_mutated(exported):
    before = exported.model.SerializeToString()
    run_passes(exported)
    assert exported.model.SerializeToString() == before


def test_passes_are_deterministic(exported):
    first = run_passes(exported, check=False).model.SerializeToString()
    second = run_passes(exported, check=False).model.SerializeToString()
    assert first == second
