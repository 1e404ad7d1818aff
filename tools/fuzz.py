"""Fuzz the converter with random small models (models/fuzz/) and check every verdict.

Each generated model goes through `bridge.convert` in every requested mode. A case ends as:

- converted: convert() returned, and an independent re-check agrees: torch and LiteRT (our own
  interpreter calls on `conversion.tflite_path`, not bridge's runners) on fresh random inputs,
  each sample judged alone with `bridge.runtime.metrics.compare` at the mode's torch ⇄ tflite
  floor, invoked in a row without `reset_all_variables()` (as users do), then the first sample
  once more, which must give the same result (a stateful file does not);
- refused: convert() raised a `BridgeError` (a typed, explained refusal);
- mismatch: convert() returned but the re-check disagrees (a silently wrong model: must be 0);
- crash: any other exception, or the case's process died (abort, segfault) or hung: a bug in
  bridge, must be 0. Every case runs in a child process (`tools/_isolate.py`).

Model families (`models/fuzz/families.py`): plain layer graphs, and a configurable share each of
data-dependent branches, recurrent layers read from their state, and constant outputs.

    python tools/fuzz.py [--cases 500] [--seed 0] [--modes fp32,int8] [--replay spec.json]

Prints a table per mode and family and writes tools/results/fuzz.json (counts, refusal reasons,
and the spec of every case that was not converted, so it can be replayed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx

from bridge.contract import IOContract
from bridge.runtime.metrics import compare
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB, floor, noise_floor_db, rule
from bridge.verify import noise
from models.fuzz import FuzzSpec, Limits, build, family_of, fuzz_specs, random_inputs
from tools._bench import print_table, write_json
from tools._isolate import Died, Isolated

log = logging.getLogger("tools.fuzz")

KINDS = ("converted", "refused", "mismatch", "crash")
#: Calibration samples for the integer modes: a realistic set (TFLite suggests 100-500). With
#: 32, products like x·x·x·x, whose rare large values dominate the error, clipped on fresh data
#: while bridge's few held-out samples passed (9 silent int8 mismatches in 500, seed 1).
CALIBRATION_SAMPLES = 128
#: Fresh samples for the independent re-check: enough to see the rare values that clip.
FRESH_SAMPLES = 32
#: Offsets from the spec seed, so calibration, re-check and bridge's own feeds all differ.
CALIBRATION_SEED, FRESH_SEED = 1_000, 2_000
#: Invoking the .tflite again on the first fresh sample must reproduce its first answer to
#: float32 precision; a stateful file (LSTM state in variable tensors) does not.
REPEAT_MIN_SQNR_DB = FP32_MIN_SQNR_DB
#: A case (convert + re-check) that runs longer than this is killed and counted as a crash.
CASE_TIMEOUT_S = 900.0


@dataclass
class Outcome:
    """How one (model, mode) case ended."""

    mode: str
    kind: str
    seconds: float
    spec: dict[str, Any]
    error: str = ""
    message: str = ""
    recheck: list[dict[str, Any]] = field(default_factory=list)

    @property
    def family(self) -> str:
        """The model family of the case's spec (plain, branch, recurrent, constant)."""
        return family_of(FuzzSpec.from_dict(self.spec))

    def describe(self) -> str:
        """A few lines for an assertion message: the verdict, the error and the model."""
        spec = FuzzSpec.from_dict(self.spec)
        lines = [f"{self.mode} {self.kind}: {self.error} {self.message}".rstrip()]
        for r in self.recheck:
            if not r["passed"]:
                lines.append(
                    f"  re-check {r['output']} ({r['candidate']}): SQNR {r['sqnr_db']:.1f} dB "
                    f"< {r['min_sqnr_db']} dB {r['note']}"
                )
        lines.append(f"  model: {spec.describe()}")
        lines.append(f"  spec: {json.dumps(self.spec)}")
        return "\n".join(lines)


Convert = Callable[..., Any]
OpenTflite = Callable[[Path, int, int], Any]


def run_case(
    spec: FuzzSpec,
    mode: str,
    workdir: Path | None = None,
    *,
    convert: Convert | None = None,
    open_tflite: OpenTflite | None = None,
    **options: Any,
) -> Outcome:
    """Convert the model of `spec` in `mode` and classify the result (see module docstring).

    `options` go to `bridge.convert` (for example verify_samples=8). `convert` (default
    `bridge.convert`) and `open_tflite(path, n_inputs, n_outputs)` (default: a LiteRT
    interpreter; anything with `run(sample) -> outputs`) can be replaced by tests."""
    import bridge

    model, inputs = build(spec)
    calibration = None
    if mode in ("int8", "int16x8"):
        calibration = random_inputs(spec, spec.seed + CALIBRATION_SEED, CALIBRATION_SAMPLES)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-", dir=workdir) as tmp:
        try:
            conv = (convert or bridge.convert)(
                model,
                inputs,
                Path(tmp) / "out",
                quantize=None if mode == "fp32" else mode,
                calibration=calibration,
                seed=spec.seed,
                **options,
            )
        except bridge.BridgeError as e:
            return _outcome(spec, mode, "refused", start, e)
        except Exception as e:  # anything untyped is a bridge bug: record it, keep fuzzing
            log.debug("crash:\n%s", traceback.format_exc())
            return _outcome(spec, mode, "crash", start, e)
        try:
            runner = (open_tflite or _Interpreter)(
                conv.tflite_path, len(spec.inputs), len(spec.outputs)
            )
            checks = recheck(model, spec, runner, mode, floors=_floors(conv, mode))
        except Exception as e:  # a .tflite that does not run is a silent failure too
            out = _outcome(spec, mode, "mismatch", start, e)
            out.message = f"the re-check could not run the .tflite: {out.message}"
            return out
    kind = "converted" if all(c["passed"] for c in checks) else "mismatch"
    return Outcome(mode, kind, time.perf_counter() - start, spec.to_dict(), recheck=checks)


def run_job(job: tuple[dict[str, Any], str], workdir: Path | None, options: dict) -> dict:
    """`run_case` for a child process (`Isolated`): a spec dict and mode in, Outcome dict out."""
    _quiet()
    spec, mode = job
    return asdict(run_case(FuzzSpec.from_dict(spec), mode, workdir, **options))


def run_isolated(child: Isolated, spec: FuzzSpec, mode: str) -> Outcome:
    """`run_case` in `child`; a child that dies or hangs makes the case a crash."""
    start = time.perf_counter()
    result = child.run((spec.to_dict(), mode))
    if isinstance(result, Died):
        message = f"the case's process died ({result.reason}) in convert or re-check"
        seconds = time.perf_counter() - start
        return Outcome(mode, "crash", seconds, spec.to_dict(), "NativeCrash", message)
    return Outcome(**result)


def _outcome(spec: FuzzSpec, mode: str, kind: str, start: float, e: BaseException) -> Outcome:
    text = str(e).strip().splitlines()
    return Outcome(
        mode,
        kind,
        time.perf_counter() - start,
        spec.to_dict(),
        error=type(e).__name__,
        message=text[0][:500] if text else repr(e),
    )


#: Per output, per sample: the torch ⇄ tflite floor in dB, given the samples and torch outputs.
Floors = Callable[[list, list], list[list[float]]]


def recheck(
    model: Any, spec: FuzzSpec, runner: Any, mode: str, floors: Floors | None = None
) -> list[dict[str, Any]]:
    """torch vs `runner` (the .tflite) on fresh inputs: per output, the worst sample against
    its floor (`floors`, default the mode's fixed torch ⇄ tflite floor), then the first sample
    invoked again, which must repeat its first answer."""
    samples = random_inputs(spec, spec.seed + FRESH_SEED, FRESH_SAMPLES)
    ref = [_torch_outputs(model, sample) for sample in samples]
    got = [runner.run(sample) for sample in samples]  # in a row, no reset, as users call it
    again = runner.run(samples[0])
    limits = (floors or _fixed_floors(mode, len(spec.outputs)))(samples, ref)
    checks = [_worst_sample(k, ref, got, limits[k]) for k in range(len(spec.outputs))]
    for k in range(len(spec.outputs)):
        c = _compare(got[0][k], again[k], k, "litert again", REPEAT_MIN_SQNR_DB)
        c["note"] = (c["note"] + " sample 0 invoked again after the others").strip()
        checks.append(c)
    return checks


def _fixed_floors(mode: str, n_out: int) -> Floors:
    fixed = floor(mode, "torch_vs_tflite")
    return lambda samples, ref: [[fixed] * len(samples) for _ in range(n_out)]


def _floors(conv: Any, mode: str) -> Floors | None:
    """The floors bridge's gate uses for a sample: in integer modes, what the rounding-noise
    model of the written model.qdq.onnx predicts for it (tolerances.noise_floor_db), so a
    sample whose output spans a few steps is not held to a number only a wide one reaches.

    Fresh samples may hold values beyond the calibrated ranges (a product of two Gaussians'
    tail), which the deployed int8 model clips by design; the prediction here clips them too,
    so a mismatch is a file that computes what its own quantized model does not. Clipping that
    the calibration should have covered is the gate's to refuse, on the example input and the
    held-out samples."""
    qdq_path = getattr(conv, "qdq_path", None)
    if rule(mode, "torch_vs_tflite") != "noise" or qdq_path is None:
        return None
    contract = IOContract.from_dict(conv.report["contract"])
    qdq = onnx.load(str(qdq_path))

    def derived(samples: list, ref: list) -> list[list[float]]:
        feeds = [dict(zip(contract.input_names, s, strict=True)) for s in samples]
        refs = [dict(zip(contract.output_names, r, strict=True)) for r in ref]
        predicted = noise.predict(qdq, contract, feeds, refs, clip=True)
        return [[noise_floor_db(p, mode) for p in predicted[n]] for n in contract.output_names]

    return derived


def _torch_outputs(model: Any, sample: Sequence[np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        out = model(*(torch.from_numpy(x) for x in sample))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _worst_sample(k: int, ref: list, got: list, floors: list[float]) -> dict[str, Any]:
    """Output `k` judged on every sample alone: the worst one, and how many failed."""
    each = [
        _compare(r[k], g[k], k, "litert", min_db)
        for r, g, min_db in zip(ref, got, floors, strict=True)
    ]
    i = min(range(len(each)), key=lambda j: (each[j]["passed"], each[j]["sqnr_db"]))
    failed = sum(not c["passed"] for c in each)
    worst = {**each[i], "sample": i, "failed_samples": failed}
    if failed:
        worst["note"] = (worst["note"] + f" {failed}/{len(each)} samples, worst {i}").strip()
    return worst


def _compare(ref: np.ndarray, out: np.ndarray, k: int, name: str, min_db: float) -> dict:
    pair = ("torch" if name == "litert" else "litert", name)
    return compare(ref, out, output=f"output_{k}", pair=pair, min_sqnr_db=min_db).to_dict()


class _Interpreter:
    """LiteRT called directly: inputs `input_i` and outputs `output_i` matched by name."""

    def __init__(self, path: Path, n_in: int, n_out: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=str(path), num_threads=1)
        self.interp.allocate_tensors()
        self.ins = self._by_name(self.interp.get_input_details(), "input", n_in)
        self.outs = self._by_name(self.interp.get_output_details(), "output", n_out)

    @staticmethod
    def _by_name(details: list[dict], prefix: str, n: int) -> list[dict]:
        names = {d["name"]: d for d in details}
        wanted = [f"{prefix}_{i}" for i in range(n)]
        if sorted(names) != sorted(wanted):
            raise ValueError(f"the .tflite {prefix}s are {sorted(names)}, expected {wanted}")
        return [names[w] for w in wanted]

    def run(self, sample: Sequence[np.ndarray]) -> list[np.ndarray]:
        for d, x in zip(self.ins, sample, strict=True):
            self.interp.set_tensor(d["index"], _to_io(x, d))
        self.interp.invoke()
        return [_from_io(self.interp.get_tensor(d["index"]), d) for d in self.outs]


def _to_io(x: np.ndarray, d: dict) -> np.ndarray:
    if np.dtype(d["dtype"]).kind in "iu":
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(d["dtype"])
    return x.astype(d["dtype"])


def _from_io(y: np.ndarray, d: dict) -> np.ndarray:
    if np.dtype(d["dtype"]).kind in "iu":
        scale, zero = d["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return np.array(y, copy=True)


def generate_cases(n: int, seed: int, limits: Limits, visit: Callable[[FuzzSpec], None]) -> None:
    """Call `visit` on `n` distinct hypothesis-generated specs (seeded; no shrinking)."""
    from hypothesis import HealthCheck, Phase, assume, given, settings
    from hypothesis import seed as hypothesis_seed

    seen: set[str] = set()

    @hypothesis_seed(seed)
    @settings(
        max_examples=n,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz_specs(limits))
    def each(spec: FuzzSpec) -> None:
        assume(spec.key() not in seen)  # hypothesis repeats some examples: run each once
        seen.add(spec.key())
        visit(spec)

    each()


def summarize(outcomes: Sequence[Outcome], modes: Sequence[str]) -> dict[str, Any]:
    """Counts per mode and per mode × family, refusal reasons, seconds per case, and the cases
    that were not converted."""
    per_mode: dict[str, Any] = {}
    for mode in modes:
        mine = [o for o in outcomes if o.mode == mode]
        families = sorted({o.family for o in mine})
        per_mode[mode] = {
            **_counts(mine),
            "refusals": dict(Counter(o.error for o in mine if o.kind == "refused")),
            "crashes": dict(Counter(o.error for o in mine if o.kind == "crash")),
            "families": {f: _counts([o for o in mine if o.family == f]) for f in families},
        }
    return {
        "modes": per_mode,
        "failures": [{**asdict(o), "family": o.family} for o in outcomes if o.kind != "converted"],
    }


def _counts(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    counts = Counter(o.kind for o in outcomes)
    seconds = sum(o.seconds for o in outcomes)
    return {
        "cases": len(outcomes),
        **{k: counts.get(k, 0) for k in KINDS},
        "seconds": round(seconds, 1),
        "seconds_per_case": round(seconds / len(outcomes), 2) if outcomes else 0.0,
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    lim = Limits()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=500, help="models to generate (per mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="fp32,int8")
    p.add_argument("--max-layers", type=int, default=lim.max_layers)
    for family, share in lim.family_shares().items():
        p.add_argument(f"--{family}-percent", type=int, default=share, help="share of models")
    p.add_argument("--replay", type=Path, help="run the specs stored in a fuzz.json or spec file")
    p.add_argument("--out", default="fuzz", help="results name under tools/results/")
    p.add_argument("--verify-samples", type=int, help="bridge.convert(verify_samples=...)")
    p.add_argument("--timeout", type=float, default=CASE_TIMEOUT_S, help="seconds per case")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    _quiet()
    modes = [m for m in args.modes.split(",") if m]
    limits = Limits(
        max_layers=args.max_layers,
        branch_percent=args.branch_percent,
        recurrent_percent=args.recurrent_percent,
        constant_percent=args.constant_percent,
    )
    options = {} if args.verify_samples is None else {"verify_samples": args.verify_samples}
    outcomes: list[Outcome] = []
    started = time.perf_counter()

    with Isolated("tools.fuzz:run_job", None, options, timeout_s=args.timeout) as child:

        def visit(spec: FuzzSpec) -> None:
            for mode in modes:
                o = run_isolated(child, spec, mode)
                outcomes.append(o)
                if o.kind != "converted":
                    log.warning("case %d [%s] %s", len(outcomes), o.family, o.describe())
                if len(outcomes) % 25 == 0:
                    log.warning("%d cases, %.0f s", len(outcomes), time.perf_counter() - started)

        if args.replay:
            for spec in _replay_specs(args.replay):
                visit(spec)
        else:
            generate_cases(args.cases, args.seed, limits, visit)
    summary = summarize(outcomes, modes)
    summary["settings"] = {"cases": args.cases, "seed": args.seed, "modes": modes, **options}
    summary["settings"]["limits"] = asdict(limits)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    _print_summary(summary)
    print(f"wrote {write_json(args.out, summary)}")
    bad = sum(s["mismatch"] + s["crash"] for s in summary["modes"].values())
    return 1 if bad else 0


def _quiet() -> None:
    """Refusals are reported per case, not logged; silence a known hypothesis warning."""
    logging.getLogger("bridge").setLevel(logging.ERROR)
    # onnx2tf raises the recursion limit at import; hypothesis warns that it cannot restore it.
    warnings.filterwarnings("ignore", "The recursion limit will not be reset")


def _print_summary(summary: dict[str, Any]) -> None:
    rows = []
    for m, s in summary["modes"].items():
        for family, c in [("all", s), *s["families"].items()]:
            counts = [c[k] for k in ("cases", *KINDS, "seconds", "seconds_per_case")]
            rows.append([m, family, *counts])
    heads = ["mode", "family", "cases", "converted", "typed refusals", "silent mismatches"]
    print_table([*heads, "crashes", "seconds", "s/case"], rows)
    for m, s in summary["modes"].items():
        if s["refusals"] or s["crashes"]:
            print(f"{m}: refusals {s['refusals']}, crashes {s['crashes']}")


def _replay_specs(path: Path) -> list[FuzzSpec]:
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "failures" in data:
        items = [f["spec"] for f in data["failures"]]
    else:
        items = data if isinstance(data, list) else [data]
    seen: dict[str, FuzzSpec] = {}
    for item in items:
        seen.setdefault(json.dumps(item, sort_keys=True), FuzzSpec.from_dict(item))
    return list(seen.values())


if __name__ == "__main__":
    sys.exit(main())
