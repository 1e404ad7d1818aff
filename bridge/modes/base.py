"""The `Mode` type: everything a quantization mode decides, as frozen data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bridge.errors import ConfigError

#: TFLite tensor type codes of integer activations.
TFLITE_TYPES = {"int8": 9, "int16": 7}


@dataclass(frozen=True)
class Link:
    """One per-layer comparison between neighbouring runtimes and the stage it blames.

    `accumulates`: the candidate approximates the reference (quantized values, integer kernels),
    so the error grows layer after layer and later layers can average it out (a mean pooling);
    while every output meets the floor, an intermediate tensor below it is a divergence only if
    it lost much in one layer (`bridge.verify.divergence.LAYER_DROP_DB`).
    """

    ref: str
    cand: str
    kind: str  # "export", "quantization", "conversion", "end-to-end" or "" (never judged)
    floor: tuple[str | None, str] | None  # (mode, pair) of a Mode's floors; None: the model's
    accumulates: bool = False

    @property
    def pair(self) -> str:
        return f"{self.ref}_vs_{self.cand}"


#: torch ⇄ ORT on the float graph: every mode's first link.
EXPORT = Link("torch", "ort", "export", (None, "torch_vs_ort"))


@dataclass(frozen=True)
class Mode:
    """A conversion mode.

    Attributes:
        name: the registry key (`quantize=` and `--quantize`).
        activation_dtype: "float32", "int8" or "int16".
        weight_dtype: "float32", "float16" or "int8".
        needs_calibration: the quantizer needs calibration data (integer activations).
        has_qdq: the quantize step writes a QDQ model (model.qdq.onnx).
        floors: runtime pair → fixed SQNR floor in dB, in report order (`runtime/tolerances`).
        rules: pair → how its floor is derived per sample ("noise", "lsb"; default "fixed").
        links: the per-layer comparisons of `bridge.verify.localize`.
        io_dtypes: the .tflite's allowed input/output storage types.
        lowering: the `bridge.lower` function it lowers with (registered under this name in
            `bridge.lower.modes`); "" means the mode's own name.
    """

    name: str
    activation_dtype: str
    weight_dtype: str
    needs_calibration: bool
    has_qdq: bool
    floors: Mapping[str, float]
    links: tuple[Link, ...]
    rules: Mapping[str, str] = field(default_factory=dict)
    io_dtypes: tuple[str, ...] = ("float32",)
    lowering: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lowering", self.lowering or self.name)
        object.__setattr__(self, "rules", MappingProxyType(dict(self.rules)))

    @property
    def integer(self) -> bool:
        """Integer activations: QDQ ⇄ .tflite is judged in output steps."""
        return self.activation_dtype in TFLITE_TYPES

    @property
    def quant_activation_dtype(self) -> str | None:
        """The quantizer's activation storage type: "int8", "int16", or None (stay float)."""
        return self.activation_dtype if self.integer else None

    @property
    def tflite_activation_type(self) -> int | None:
        """The TFLite type code of integer activations, None for float ones."""
        return TFLITE_TYPES.get(self.activation_dtype)

    @property
    def pairs(self) -> list[str]:
        """The runtime pairs checked, in report order."""
        return list(self.floors)

    def floor(self, pair: str) -> float:
        """The fixed SQNR floor of `pair` (the fallback of a derived rule)."""
        try:
            return self.floors[pair]
        except KeyError:
            raise ConfigError(f"no tolerance for mode {self.name!r}, pair {pair!r}") from None

    def rule(self, pair: str) -> str:
        """How `pair`'s floor is found: "fixed", "noise" or "lsb"."""
        return self.rules.get(pair, "fixed")
