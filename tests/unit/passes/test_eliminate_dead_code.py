"""eliminate_dead_code: nodes and initializers no output depends on are removed."""

from __future__ import annotations

import numpy as np

from bridge.passes.eliminate_dead_code import eliminate_dead_code

#: Removing unread nodes changes no value.
EXACT = 0.0


def test_removes_dead_branch_unused_initializer_and_dropout_mask(g):
    n = g.node
    model = g.model(
        [
            n("Relu", ["x"], ["r"]),
            n("Exp", ["r"], ["dead1"]),
            n("Add", ["dead1", "w_dead"], ["dead2"]),
            n("Dropout", ["r"], ["y", "mask"]),  # nobody reads the mask
        ],
        {"x": [2, 3]},
        {"y": [2, 3]},
        {"w_dead": np.ones(3, np.float32), "w_unused": np.ones(3, np.float32)},
    )
    before = g.ort(model)
    result = eliminate_dead_code(model)
    # 2 nodes + 2 initializers + 1 optional output.
    assert result.count == 5
    assert g.ops(result.model) == ["Relu", "Dropout"]
    assert list(result.model.graph.node[1].output) == ["y"]
    assert not result.model.graph.initializer
    assert g.io(result.model) == g.io(model)
    assert g.diff(before, g.ort(result.model)) <= EXACT


def test_unused_graph_input_stays(g):
    model = g.model([g.node("Relu", ["x"], ["y"])], {"x": [2], "unused": [2]}, {"y": [2]})
    result = eliminate_dead_code(model)
    assert (result.modified, result.count) == (False, 0)
    assert g.io(result.model) == (["x", "unused"], ["y"])
