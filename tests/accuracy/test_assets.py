"""The real-model loaders: shapes, splits, labels, and each model's own float accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.accuracy, pytest.mark.usefixtures("real_assets")]

# Float accuracy floors of the models as loaded, in percent: far below what they reach
# (99.9, 97.1, 90.0, 95.6, 73) but high enough to catch wrong preprocessing or wrong weights.
FLOOR = {"mnist": 99.0, "opencv": 95.0, "fashion": 88.0, "efficientnet": 90.0, "probe": 65.0}


def _top1(model: torch.nn.Module, x: np.ndarray, labels) -> float:
    with torch.inference_mode():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    if isinstance(labels, np.ndarray):
        return 100.0 * float(np.mean(pred == labels))
    return 100.0 * float(np.mean([p in s for p, s in zip(pred, labels, strict=True)]))


def _disjoint(a: np.ndarray, b: np.ndarray) -> bool:
    rows = {r.tobytes() for r in a}
    return not any(r.tobytes() in rows for r in b)


@pytest.mark.parametrize("source", ["mnist", "opencv"])
def test_digits(source: str) -> None:
    from models.real import digits_real

    model, example, data = digits_real(source, eval_samples=1000, calib_samples=64)
    (x,) = data.evaluation
    assert x.shape == (1000, 1, 28, 28) and x.dtype == np.float32
    assert data.calibration[0].shape == (64, 1, 28, 28)
    assert example[0].shape == (1, 1, 28, 28)
    assert _disjoint(data.calibration[0], x)
    assert set(np.unique(data.labels)) == set(range(10))
    assert sum(p.numel() for p in model.parameters()) == 390_410
    assert _top1(model, x, data.labels) >= FLOOR[source]


def test_opencv_digits_sheet() -> None:
    from models.real.digits import opencv_digits

    images, labels = opencv_digits()
    assert images.shape == (5000, 28, 28)
    assert np.bincount(labels).tolist() == [500] * 10
    # white ink on black, padded: the 4-pixel border is empty, as in MNIST
    assert images[:, :4].max() == 0.0 and images.max() == 1.0


def test_fashion_mnist() -> None:
    from models.real import fashion_mnist
    from models.real.fashion_mnist import cache_path

    model, _, data = fashion_mnist(eval_samples=1000, calib_samples=32)
    assert cache_path().exists()
    assert data.evaluation[0].shape == (1000, 1, 28, 28)
    assert data.calibration[0].shape == (32, 1, 28, 28)
    assert _top1(model, data.evaluation[0], data.labels) >= FLOOR["fashion"]


def test_fashion_training_is_seeded_and_leaves_global_rng_alone() -> None:
    from models.real.fashion_mnist import FashionCNN, load_split, train

    x, y = load_split("train")
    weights = []
    for _ in range(2):
        model = FashionCNN()  # its random init is replaced by the seeded one in train()
        state = torch.random.get_rng_state()
        train(model, x[:256], y[:256])
        assert torch.equal(state, torch.random.get_rng_state())
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_efficientnet_lite0() -> None:
    from models.real import efficientnet_lite0_real

    model, _, data = efficientnet_lite0_real(calib_samples=16)
    pads = [m for m in model.modules() if isinstance(m, torch.nn.ZeroPad2d)]
    assert len(pads) == 17  # the SAME-padding convolutions with a non-zero pad
    assert data.evaluation[0].shape == (90, 3, 224, 224)
    assert data.calibration[0].shape == (16, 3, 224, 224)
    assert len(data.class_names) == 1000 and data.class_names[0].startswith("tench")
    assert all(len(s) > 0 for s in data.labels)
    assert _top1(model, data.evaluation[0], data.labels) >= FLOOR["efficientnet"]


def test_efficientnet_calibration_is_other_photos_crop_by_crop() -> None:
    from bridge.errors import ConfigError
    from models.real.efficientnet import CALIBRATION_PHOTOS, PHOTOS, calibration_crops

    assert not set(CALIBRATION_PHOTOS) & set(PHOTOS)
    n = len(CALIBRATION_PHOTOS)
    crops = calibration_crops(n + 2)
    assert crops.shape == (n + 2, 3, 224, 224) and crops.dtype == np.float32
    # the first n are the centres of n different photos, then the next crop position begins
    assert len({c.tobytes() for c in crops[:n]}) == n
    np.testing.assert_array_equal(calibration_crops(1)[0], crops[0])
    assert crops.min() >= -1.0 and crops.max() <= 1.0
    with pytest.raises(ConfigError):
        calibration_crops(10 * n + 1)


def test_minilm_matches_sentence_transformers() -> None:
    """0.7553 is all-MiniLM-L6-v2's cosine for this pair (sentence-transformers' own number,
    and transformers' BertModel with mean pooling gave the same to 2e-7 here)."""
    from models.real.minilm import load_encoder, tokenize

    model = load_encoder()
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "Linux is a kernel."]
    with torch.inference_mode():
        emb = [model(*(torch.from_numpy(a) for a in tokenize(texts, n))).numpy() for n in (64, 16)]
    np.testing.assert_allclose(np.linalg.norm(emb[0], axis=1), 1.0, atol=1e-6)
    assert abs(float(emb[0][0] @ emb[0][1]) - 0.7553) < 1e-3
    assert float(emb[0][0] @ emb[0][2]) < 0.3
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-5)  # padding changes nothing


def test_minilm_probe() -> None:
    from models.real import minilm_real
    from models.real.probe import fit_probe

    model, example, data = minilm_real(per_topic=60, train_per_topic=40, calib_samples=8)
    ids, mask = data.evaluation
    assert ids.shape == mask.shape == (200, 64) and ids.dtype == np.int64
    assert (ids[:, 0] == 101).all()  # [CLS]
    assert [t.shape for t in example] == [(1, 64), (1, 64)]
    assert data.train is not None and data.train_labels is not None
    assert _disjoint(np.hstack(data.train), np.hstack(data.evaluation))
    # an evaluation limit keeps the topics balanced: every prefix cycles through them
    assert np.bincount(data.labels[:30], minlength=10).tolist() == [3] * 10
    assert np.bincount(data.train_labels, minlength=10).tolist() == [40] * 10
    with torch.inference_mode():
        train = model(*(torch.from_numpy(a) for a in data.train)).numpy()
        test = model(ids_t := torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert ids_t.shape[0] == 200
    probe = fit_probe(train, data.train_labels)
    assert probe.accuracy(test, data.labels) >= FLOOR["probe"]
