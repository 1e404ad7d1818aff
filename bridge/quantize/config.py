"""What to quantize: a frozen, self-validating spec. The observers say how."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import ConfigError
from bridge.modes import MODES
from bridge.quantize.observers import OBSERVERS, Observer

IO_DTYPES = ("float32", "int8", "uint8")
WEIGHT_BITS = (8,)


#: How weights are rounded to their int8 levels (see QuantConfig.weight_rounding).
WEIGHT_ROUNDING = ("nearest", "gptq")


@dataclass(frozen=True)
class QuantConfig:
    """Quantization settings.

    Attributes:
        mode: "int8" (int8 weights and activations), "int16x8" (int8 weights, int16
            activations) or "dynamic" (int8 weights only, no calibration).
        observer: the activation observer's registered name (see `observers.OBSERVERS`).
        observer_options: keyword options of that observer (e.g. {"method": "kl"}).
        per_tensor_overrides: tensor name → observer name, built with default options.
        weight_bits: bits of the weights (TFLite: 8).
        io_dtype: storage type of the .tflite's inputs and outputs; the QDQ ONNX keeps float32
            I/O either way and the lowering reads this.
        num_samples: use at most this many calibration samples (None: all).
        exclude_nodes: node names kept float.
        weight_rounding: "gptq" (default: choose levels from the layer's calibration input
            statistics so rounding errors cancel in the layer output) or "nearest" (round each
            weight to its closest level). Scales are the same either way. On the trained
            EfficientNet-Lite0 GPTQ adds +1.9 dB torch ⇄ .tflite on top of bias correction
            (22.1 → 24.0 dB); on the random-weight zoo CNNs +0.1 dB, for 3-10 s more.
        bias_correction: after quantizing, correct each bias (int32; int64 in 16x8) for the
            mean output shift that rounding causes, layer by layer in graph order
            (`bias_correction.py`; ResNet18 +3.3 dB, MobileNetV2 +0.4 dB, a few seconds).
        equalize: before calibrating, rescale the channels of conv/gemm groups that a positive
            factor passes through exactly (ReLU, pooling, Add), balancing activation ranges
            against weight columns (`equalize.py`; 0 to +1.4 dB over the zoo CNNs, never a
            loss). The QDQ model's equalized tensors differ from the float model's by the
            per-channel factors facts["quantization"]["equalization"] lists; per-layer
            comparisons undo them (`verify/unscale.py`).
        correction_samples: calibration samples kept in memory for `equalize` and
            `bias_correction` (the first ones; all of them are still calibrated on).
    """

    mode: str = "int8"
    observer: str = "histogram"
    observer_options: Mapping[str, Any] = field(default_factory=dict)
    per_tensor_overrides: Mapping[str, str] = field(default_factory=dict)
    weight_bits: int = 8
    io_dtype: str = "float32"
    num_samples: int | None = None
    exclude_nodes: tuple[str, ...] = ()
    weight_rounding: str = "gptq"
    bias_correction: bool = True
    equalize: bool = True
    correction_samples: int = 32

    def __post_init__(self) -> None:
        _one_of("mode", self.mode, quantized_modes())
        _one_of("io_dtype", self.io_dtype, IO_DTYPES)
        _one_of("weight_bits", self.weight_bits, WEIGHT_BITS)
        _one_of("weight_rounding", self.weight_rounding, WEIGHT_ROUNDING)
        if self.io_dtype not in MODES.get(self.mode).io_dtypes:
            takers = " or ".join(repr(m) for m in MODES if self.io_dtype in MODES.get(m).io_dtypes)
            raise ConfigError(
                f"io_dtype {self.io_dtype!r} needs mode {takers} (got {self.mode!r}); "
                "use io_dtype='float32'"
            )
        if self.correction_samples < 1:
            raise ConfigError(
                f"correction_samples must be a positive integer, got {self.correction_samples}"
            )
        if self.num_samples is not None and self.num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {self.num_samples}")
        if isinstance(self.exclude_nodes, str):
            raise ConfigError("exclude_nodes must be a tuple of node names, not one string")
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))
        object.__setattr__(self, "observer_options", dict(self.observer_options))
        object.__setattr__(self, "per_tensor_overrides", dict(self.per_tensor_overrides))
        for name in (self.observer, *self.per_tensor_overrides.values()):
            OBSERVERS.get(name)  # raises ConfigError listing the known observers
        self.make_observer()  # rejects unknown or out-of-range observer options

    @property
    def activation_dtype(self) -> str | None:
        """ "int8", "int16", or None in dynamic mode (activations stay float)."""
        return MODES.get(self.mode).quant_activation_dtype

    @property
    def symmetric_activations(self) -> bool:
        """TFLite 16x8 needs symmetric int16 activations (zero point 0)."""
        return self.activation_dtype == "int16"

    def make_observer(self, tensor: str | None = None) -> Observer:
        """A fresh observer for `tensor` (its override if any, else the configured one)."""
        name = self.per_tensor_overrides.get(tensor, self.observer) if tensor else self.observer
        options = dict(self.observer_options) if name == self.observer else {}
        cls = OBSERVERS.get(name)
        try:
            return cls(
                dtype=self.activation_dtype or "int8",
                symmetric=self.symmetric_activations,
                **options,
            )
        except TypeError as e:
            raise ConfigError(f"bad observer_options for observer {name!r}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for facts and reports."""
        return {
            "mode": self.mode,
            "observer": self.observer,
            "observer_options": dict(self.observer_options),
            "per_tensor_overrides": dict(self.per_tensor_overrides),
            "weight_bits": self.weight_bits,
            "activation_dtype": self.activation_dtype,
            "io_dtype": self.io_dtype,
            "num_samples": self.num_samples,
            "exclude_nodes": list(self.exclude_nodes),
            "weight_rounding": self.weight_rounding,
            "bias_correction": self.bias_correction,
            "equalize": self.equalize,
            "correction_samples": self.correction_samples,
        }


def quantized_modes() -> tuple[str, ...]:
    """The modes this stage implements (those that write a QDQ model), integer ones first."""
    names = [m for m in MODES if MODES.get(m).has_qdq]
    return tuple(sorted(names, key=lambda m: not MODES.get(m).integer))


def _one_of(what: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{what} {value!r} is not supported; choose one of: {list(allowed)}")
