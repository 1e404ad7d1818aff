"""Fuzzing, fast CI profile: random small models (models/fuzz/) through fp32 and int8.

Every case must either convert and pass an independent re-check (torch vs LiteRT on fresh
inputs, each sample judged alone, invoked in a row without a reset, see tools/fuzz.py), or be
refused with a typed BridgeError. Hypothesis is derandomized, so CI always runs the same cases;
the long profile is `python tools/fuzz.py`. A failure prints the model's spec: replay it with
`python tools/fuzz.py --replay spec.json`. The classification itself is tested with fake
conversions, so it does not depend on the converter.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, assume, given, settings

from bridge.runtime.metrics import compare
from bridge.runtime.tolerances import floor
from models.fuzz import (
    FuzzSpec,
    Layer,
    Limits,
    RandomSource,
    build,
    family_of,
    fuzz_specs,
    generate,
    random_inputs,
)
from tools._isolate import Died, Isolated
from tools.fuzz import (
    CASE_TIMEOUT_S,
    FRESH_SAMPLES,
    FRESH_SEED,
    Outcome,
    run_case,
    run_isolated,
)

#: Cases per mode (about 1-2 s each on the 2-core CI machine).
FP32_CASES = 30
INT8_CASES = 20
#: Share of cases that must convert: random graphs hit known lowering gaps (typed refusals),
#: but a fuzz run that mostly refuses tests nothing.
MIN_CONVERTED = {"fp32": 0.6, "int8": 0.4}
#: The hypothesis profile draws plain graphs; each special family has its own cases below.
PLAIN = Limits(branch_percent=0, recurrent_percent=0, constant_percent=0)
#: End-to-end cases per special family and mode (each 1-3 s, in one child process).
FAMILY_CASES = 2


def _fuzz(mode: str, cases: int, tmp_path: Path) -> list[Outcome]:
    outcomes: list[Outcome] = []
    seen: set[str] = set()
    failed: dict[str, Outcome] = {}

    @settings(
        max_examples=cases,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the spec is printed instead
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    @given(spec=fuzz_specs(PLAIN))
    def case(spec: FuzzSpec) -> None:
        key = spec.key()
        # Hypothesis repeats some examples: run each once, but replay a failure (hypothesis
        # runs a failing example again to report it) instead of rejecting it.
        assume(key not in seen or key in failed)
        if key in failed:
            outcome = failed[key]
        else:
            seen.add(key)
            outcome = run_case(spec, mode, tmp_path)
            outcomes.append(outcome)
        if outcome.kind not in ("converted", "refused"):
            failed[key] = outcome
        assert outcome.kind in ("converted", "refused"), outcome.describe()
        if outcome.kind == "refused":
            assert outcome.message, outcome.describe()

    case()
    return outcomes


def _check_share(outcomes: list[Outcome], mode: str) -> None:
    converted = sum(o.kind == "converted" for o in outcomes)
    refusals = "\n".join(o.describe() for o in outcomes if o.kind != "converted")
    assert converted >= MIN_CONVERTED[mode] * len(outcomes), (
        f"{converted}/{len(outcomes)} converted\n{refusals}"
    )


#: onnx2tf raises the recursion limit at import; hypothesis warns that it cannot restore it.
pytestmark = pytest.mark.filterwarnings("ignore:The recursion limit will not be reset")


def test_fuzz_fp32(tmp_path: Path) -> None:
    outcomes = _fuzz("fp32", FP32_CASES, tmp_path)
    assert len(outcomes) == FP32_CASES
    _check_share(outcomes, "fp32")


def test_fuzz_int8(tmp_path: Path) -> None:
    outcomes = _fuzz("int8", INT8_CASES, tmp_path)
    assert len(outcomes) == INT8_CASES
    _check_share(outcomes, "int8")


def _family_specs(family: str, n: int) -> list[FuzzSpec]:
    specs = (generate(RandomSource(seed)) for seed in range(1_000))
    return [s for s in specs if family_of(s) == family][:n]


@pytest.fixture(scope="module")
def child() -> Iterator[Isolated]:
    """One child process for the end-to-end family cases: a native crash is a `crash`."""
    with Isolated("tools.fuzz:run_job", None, {}, timeout_s=CASE_TIMEOUT_S) as c:
        yield c


def _run_family(child: Isolated, family: str, mode: str) -> None:
    outcomes = [run_isolated(child, spec, mode) for spec in _family_specs(family, FAMILY_CASES)]
    assert len(outcomes) == FAMILY_CASES
    bad = [o.describe() for o in outcomes if o.kind not in ("converted", "refused")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("family", ["branch", "recurrent", "constant"])
def test_family_cases_fp32(child: Isolated, family: str) -> None:
    _run_family(child, family, "fp32")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["branch", "recurrent", "constant"])
def test_family_cases_int8(child: Isolated, family: str) -> None:
    _run_family(child, family, "int8")


# The classification, with fake conversions: a linear layer whose "tflite" answers like torch
# except where a test says otherwise.
SPEC = FuzzSpec(((1, 8),), (Layer("linear", (0,), {"out": 6, "bias": True}),), (1,), seed=5)


class _FakeTflite:
    """Torch's answer for SPEC, scaled by (1 + error) on invoke `bad_call`, plus `leak` × the
    previous answer when stateful (as an LSTM whose state lives in variable tensors)."""

    def __init__(self, *, bad_call: int = -1, error: float = 0.0, leak: float = 0.0) -> None:
        self.model, _ = build(SPEC)
        self.bad_call, self.error, self.leak = bad_call, error, leak
        self.calls, self.previous = 0, None

    def run(self, sample: Sequence[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            y = self.model(torch.from_numpy(sample[0])).numpy()
        if self.calls == self.bad_call:
            y = y * (1.0 + self.error)
        if self.leak and self.previous is not None:
            y = y + self.leak * self.previous
        self.calls, self.previous = self.calls + 1, y
        return [y]


def _fake_case(fake: _FakeTflite) -> Outcome:
    def convert(*args: Any, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(tflite_path=Path("fake.tflite"))

    return run_case(SPEC, "fp32", convert=convert, open_tflite=lambda *a: fake)


def test_exact_fake_is_converted() -> None:
    outcome = _fake_case(_FakeTflite())
    assert outcome.kind == "converted", outcome.describe()


def test_one_bad_sample_is_a_mismatch_though_pooled_passes() -> None:
    min_db = floor("fp32", "torch_vs_tflite")
    bad = 5
    # Sample `bad` alone is 5 dB under the floor; pooled over 32 samples it is above it.
    fake = _FakeTflite(bad_call=bad, error=10 ** (-(min_db - 5) / 20))
    outcome = _fake_case(fake)
    assert outcome.kind == "mismatch", outcome.describe()
    worst = outcome.recheck[0]
    assert (worst["sample"], worst["failed_samples"]) == (bad, 1), outcome.describe()
    assert worst["sqnr_db"] == pytest.approx(min_db - 5, abs=0.1)
    samples = random_inputs(SPEC, SPEC.seed + FRESH_SEED, FRESH_SAMPLES)
    exact, again = _FakeTflite(), _FakeTflite(bad_call=bad, error=fake.error)
    pooled = compare(
        np.stack([exact.run(x)[0] for x in samples]),
        np.stack([again.run(x)[0] for x in samples]),
        output="output_0",
        pair=("torch", "litert"),
        min_sqnr_db=min_db,
    )
    assert pooled.passed, pooled  # the pooled re-check this replaced called it converted


def test_stateful_tflite_is_a_mismatch() -> None:
    min_db = floor("fp32", "torch_vs_tflite")
    # State leaks 20 dB under the floor: small, but the second invoke is already wrong.
    outcome = _fake_case(_FakeTflite(leak=10 ** (-(min_db - 20) / 20)))
    assert outcome.kind == "mismatch", outcome.describe()
    first, repeat = outcome.recheck
    assert not first["passed"] and first["sample"] > 0, outcome.describe()
    assert repeat["candidate"] == "litert again" and not repeat["passed"], outcome.describe()


def test_a_native_crash_is_reported_and_the_child_replaced() -> None:
    with Isolated("signal:raise_signal", timeout_s=CASE_TIMEOUT_S) as child:
        assert child.run(signal.SIGCHLD) is None  # ignored by default: the child answers
        assert child.run(signal.SIGABRT) == Died("killed by SIGABRT")
        assert child.run(signal.SIGSEGV) == Died("killed by SIGSEGV")
        assert child.run(signal.SIGCHLD) is None


def test_a_dead_case_counts_as_a_crash() -> None:
    class Dead:
        def run(self, job: Any) -> Died:
            return Died("killed by SIGABRT")

    outcome = run_isolated(Dead(), SPEC, "int8")  # type: ignore[arg-type]
    assert (outcome.kind, outcome.error) == ("crash", "NativeCrash"), outcome.describe()
    assert "SIGABRT" in outcome.message
