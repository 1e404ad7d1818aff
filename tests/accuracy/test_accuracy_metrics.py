"""The metric code of the accuracy evaluation, on small made-up data (no assets needed)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from models.real.evaluate import Row, Score, cosines, run_all, score_classify, score_embed
from models.real.probe import fit_probe
from models.real.task import Dataset, split


def test_score_classify_counts_top1_and_agreement() -> None:
    logits = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    reference = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [1.0, 0.0]])
    s = score_classify(logits, np.array([1, 0, 0, -1]), reference)
    assert s.metric == pytest.approx(100 * 2 / 3, abs=1e-3)  # sample 3 is unlabelled
    assert s.agree == 75.0


def test_score_classify_accepts_label_sets() -> None:
    logits = np.eye(3)
    s = score_classify(logits, (frozenset({0, 2}), frozenset({2}), frozenset()), logits)
    assert s.metric == 50.0 and s.agree == 100.0


def test_cosines_and_embed_score() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 1.0], [0.0, -1.0]])
    np.testing.assert_allclose(cosines(a, b), [np.sqrt(0.5), -1.0])
    probe = fit_probe(a, np.array([0, 1]))
    s = score_embed(b, np.array([0, 1]), a, probe)
    assert s.cos_min == -1.0 and s.cos_mean == pytest.approx((np.sqrt(0.5) - 1) / 2, abs=1e-6)


def test_probe_separates_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 3
    labels = np.repeat(np.arange(4), 50)
    x = centres[labels] + rng.normal(size=(200, 16))
    p1, p2 = fit_probe(x, labels), fit_probe(x, labels)
    assert p1.accuracy(x, labels) == 100.0
    np.testing.assert_array_equal(p1.weight, p2.weight)


def test_row_drop_is_torch_minus_tflite() -> None:
    row = Row("m", "int8", "top1", 10, torch=Score(99.0), ort=Score(98.5), tflite=Score(98.0))
    assert row.drop == 1.0 and row.ort_drop == 0.5
    assert Row("m", "int8", "top1", 10, torch=Score(99.0)).drop is None
    assert row.to_dict()["drop"] == 1.0


def test_run_all_feeds_batch_one() -> None:
    seen = []

    def predict(sample):
        seen.append(sample[0].shape)
        return sample[0].sum(axis=1)

    out = run_all(predict, (np.ones((3, 4), np.float32),))
    assert seen == [(1, 4)] * 3 and out.tolist() == [[4.0]] * 3


def test_split_is_disjoint_and_seeded() -> None:
    cal, ev = split(100, calibration=10, evaluation=30, seed=1)
    assert len(set(cal) | set(ev)) == 40
    cal2, ev2 = split(100, calibration=10, evaluation=30, seed=1)
    assert (cal == cal2).all() and (ev == ev2).all()


def test_dataset_calibration_samples_are_batch_one_tuples() -> None:
    x = np.zeros((5, 1, 2, 2), np.float32)
    ids = np.zeros((5, 8), np.int64)
    data = Dataset("embed", (x, ids), (x, ids), np.zeros(5, np.int64), ("a",))
    samples = data.calibration_samples()
    assert len(samples) == 5 and [a.shape for a in samples[0]] == [(1, 1, 2, 2), (1, 8)]


def test_read_safetensors(tmp_path: Path) -> None:
    from models.real.minilm import read_safetensors

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([7, -1], dtype=np.int64)
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + a.tobytes() + b.tobytes())
    tensors = read_safetensors(path)
    assert sorted(tensors) == ["a", "b"]
    np.testing.assert_array_equal(tensors["a"].numpy(), a)
    np.testing.assert_array_equal(tensors["b"].numpy(), b)


def test_results_merge_replaces_same_model_and_mode(tmp_path: Path) -> None:
    from tools.eval_accuracy import merge_rows, previous_rows

    def row(model: str, mode: str, mb: float) -> dict:
        return {"model": model, "mode": mode, "tflite_mb": mb}

    old = [row("minilm", "fp32", 1.0), row("digits_mnist", "int8", 2.0), row("x", "fp16", 3.0)]
    new = [row("minilm", "fp32", 9.0), row("digits_mnist", "fp32", 4.0)]
    merged = merge_rows(old, new)
    assert [(r["model"], r["mode"], r["tflite_mb"]) for r in merged] == [
        ("digits_mnist", "fp32", 4.0),
        ("digits_mnist", "int8", 2.0),
        ("minilm", "fp32", 9.0),
        ("x", "fp16", 3.0),  # unknown models keep their place after the known ones
    ]
    path = tmp_path / "accuracy.json"
    assert previous_rows(path) == []
    path.write_text(json.dumps({"rows": old}))
    assert previous_rows(path) == old
