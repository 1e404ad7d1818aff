"""Fuzzing, fast CI profile: random small models (models/fuzz.py) through fp32 and int8.

Every case must either convert and pass an independent re-check (torch vs LiteRT on fresh
inputs, see tools/fuzz.py), or be refused with a typed BridgeError. Hypothesis is
derandomized, so CI always runs the same cases; the long profile is `python tools/fuzz.py`.
A failure prints the model's spec: replay it with `python tools/fuzz.py --replay spec.json`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings

from models.fuzz import FuzzSpec, fuzz_specs
from tools.fuzz import Outcome, run_case

#: Cases per mode (about 1-2 s each on the 2-core CI machine).
FP32_CASES = 30
INT8_CASES = 20
#: Share of cases that must convert: random graphs hit known lowering gaps (typed refusals),
#: but a fuzz run that mostly refuses tests nothing.
MIN_CONVERTED = {"fp32": 0.6, "int8": 0.4}


def _fuzz(mode: str, cases: int, tmp_path: Path) -> list[Outcome]:
    outcomes: list[Outcome] = []
    seen: set[str] = set()

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
    @given(spec=fuzz_specs())
    def case(spec: FuzzSpec) -> None:
        assume(spec.key() not in seen)  # hypothesis repeats some examples: run each once
        seen.add(spec.key())
        outcome = run_case(spec, mode, tmp_path)
        outcomes.append(outcome)
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
