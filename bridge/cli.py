"""`bridge convert | verify | inspect`: the command line. The only place that exits."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import bridge
from bridge.compare import convert_modes
from bridge.errors import BridgeError, ConfigError, ModelLoadError, ParityError
from bridge.importqdq import convert_qdq
from bridge.inspect import describe
from bridge.modes import MODES
from bridge.verify import layer_report, modes_table
from bridge.verify.localize import localize_dir
from bridge.verify.report import PARITY_HEADER, parity_rows, summary_line
from bridge.verify.tables import table

log = logging.getLogger("bridge")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3
DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bridge` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="[bridge] %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("tensorflow", "absl", "onnx2tf", "h5py", "onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return int(args.func(args) or EXIT_OK)
    except ParityError as e:
        if e.report:
            print(table(PARITY_HEADER, parity_rows(e.report)), file=sys.stderr)
            if e.report.get("layers", {}).get("first_divergence"):
                print(e.report["layers"]["first_divergence"]["explanation"], file=sys.stderr)
        print(f"bridge: error: {e}", file=sys.stderr)
        return EXIT_PARITY
    except BridgeError as e:
        print(f"bridge: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as e:  # outdir says so when the folder was swapped meanwhile
        told = str(e) or "the conversion in progress wrote nothing"
        print(f"bridge: interrupted; {told}", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bridge", description=__doc__)
    p.add_argument("-q", "--quiet", action="store_true", help="print only results and errors")
    sub = p.add_subparsers(dest="command", required=True)
    _add_convert(sub)
    _add_verify(sub)
    _add_debug(sub)
    _add_inspect(sub)
    return p


def _add_convert(sub: Any) -> None:
    c = sub.add_parser("convert", help="convert a PyTorch model to a verified .tflite")
    c.add_argument(
        "factory",
        help="MODULE:FACTORY returning a model or (model, inputs); zoo:NAME for a bundled model; "
        "or a QDQ .onnx file (e.g. from ONNX Runtime's quantizer), lowered keeping its scales",
    )
    c.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:SHAPE[:DTYPE]",
        help="an input, e.g. image:1x3x224x224 (repeat per input, in order)",
    )
    c.add_argument(
        "--output-name",
        action="append",
        default=[],
        metavar="NAME",
        help="an output name (repeat per output, in order)",
    )
    c.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    mode = c.add_mutually_exclusive_group()
    mode.add_argument(
        "--fp16",
        action="store_const",
        const="fp16",
        dest="mode",
        help="float16 weights, float32 compute",
    )
    mode.add_argument("--quantize", choices=MODES.names(), dest="mode")
    mode.add_argument(
        "--modes",
        metavar="M1,M2,...",
        help=f"convert in each mode ({','.join(MODES)}) into OUTPUT/<mode>/ and "
        "compare them in OUTPUT/report.html and report.md",
    )
    mode.add_argument(
        "--qat",
        action="store_true",
        help="FACTORY returns a trained QAT model (prepare_qat_fx or prepare_qat_pt2e): "
        "int8 with its learned scales, verified against the fake-quant model",
    )
    _add_quantize_options(c)
    _add_export_options(c)
    c.set_defaults(func=_convert)


def _add_quantize_options(c: argparse.ArgumentParser) -> None:
    """convert's options for the integer modes."""
    c.add_argument(
        "--calibration",
        metavar="SOURCE",
        help=".npy, .npz, an image folder, or random:N (N seeded normal samples)",
    )
    c.add_argument("--observer", default="histogram", help="activation range observer")
    c.add_argument("--io-dtype", default="float32", choices=["float32", "int8", "uint8"])
    c.add_argument(
        "--weight-rounding",
        default="gptq",
        choices=["nearest", "gptq"],
        help="gptq (default): weight levels chosen so rounding errors cancel; nearest: faster",
    )
    c.add_argument(
        "--no-bias-correction",
        dest="bias_correction",
        action="store_false",
        help="keep the biases as quantized (by default they absorb rounding's mean shift)",
    )
    c.add_argument(
        "--no-equalize",
        dest="equalize",
        action="store_false",
        help="skip cross-layer equalization (on by default: exactly equivalent channel rescaling)",
    )


def _add_export_options(c: argparse.ArgumentParser) -> None:
    """convert's options for export, layout and the output folder."""
    c.add_argument("--nhwc", action="store_true", help="NHWC image inputs and outputs")
    c.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    c.add_argument("--opset", type=int, default=17)
    c.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different model already in the output folder",
    )


def _add_verify(sub: Any) -> None:
    v = sub.add_parser("verify", help="re-run the parity check of an output folder")
    v.add_argument("folder", type=Path)
    v.set_defaults(func=_verify)


def _add_debug(sub: Any) -> None:
    d = sub.add_parser("debug", help="per-layer comparison: name the first diverging layer")
    d.add_argument("folder", type=Path, help="a conversion folder (or a --modes parent folder)")
    d.add_argument(
        "--model",
        metavar="MODULE:FACTORY",
        help="the converted torch model (or zoo:NAME), to compare torch layers too",
    )
    d.add_argument("--samples", type=int, help="use at most N stored verification samples")
    d.set_defaults(func=_debug)


def _add_inspect(sub: Any) -> None:
    i = sub.add_parser("inspect", help="describe a .tflite or .onnx file")
    i.add_argument("file", type=Path)
    i.set_defaults(func=_inspect)


def _convert(args: argparse.Namespace) -> int:
    if args.factory.endswith(".onnx"):
        return _convert_qdq(args)
    if args.qat:
        return _convert_qat(args)
    model, inputs, names = _load_factory(args.factory, args.input)
    options: dict[str, Any] = {
        "nhwc_inputs": args.nhwc,
        "dynamic_batch": args.dynamic_batch,
        "opset": args.opset,
        "overwrite": args.overwrite,
        "observer": args.observer,
        "io_dtype": args.io_dtype,
        "weight_rounding": args.weight_rounding,
        "bias_correction": args.bias_correction,
        "equalize": args.equalize,
    }
    if names:
        options["input_names"] = names
    if args.output_name:
        options["output_names"] = args.output_name
    if args.factory.startswith("zoo:"):
        from models import convert_options

        options = {**convert_options(args.factory[4:]), **options}
    calibration = _calibration(args.calibration, inputs)
    if args.modes:
        return _convert_modes(args, model, inputs, calibration, options)
    result = bridge.convert(
        model, inputs, args.output, quantize=args.mode, calibration=calibration, **options
    )
    print(table(PARITY_HEADER, parity_rows(result.report)))
    print(summary_line(result.report))
    print(f"wrote {result.tflite_path}")
    return EXIT_OK


def _convert_qdq(args: argparse.Namespace) -> int:
    """`bridge convert model.qdq.onnx -o OUT`: a foreign QDQ model, its own scales kept."""
    if args.mode or args.modes or (args.calibration or "").startswith("random:"):
        raise ConfigError(
            "a QDQ .onnx keeps its own quantization: drop --quantize/--fp16/--modes, and give "
            "--calibration only as a .npy/.npz file or image folder to verify on"
        )
    result = convert_qdq(
        args.factory,
        args.output,
        calibration=args.calibration,
        nhwc_inputs=args.nhwc,
        overwrite=args.overwrite,
    )
    print(table(PARITY_HEADER, parity_rows(result.report)))
    print(summary_line(result.report))
    print(f"wrote {result.tflite_path}")
    return EXIT_OK


def _convert_qat(args: argparse.Namespace) -> int:
    """`bridge convert MODULE:FACTORY --qat -o OUT`: a trained QAT model, its scales kept."""
    model, inputs, names = _load_factory(args.factory, args.input)
    result = bridge.convert_qat(
        model,
        inputs,
        args.output,
        input_names=names or None,
        output_names=args.output_name or None,
        calibration=_calibration(args.calibration, inputs),
        nhwc_inputs=args.nhwc,
        overwrite=args.overwrite,
    )
    print(table(PARITY_HEADER, parity_rows(result.report)))
    print(summary_line(result.report))
    print(f"wrote {result.tflite_path}")
    return EXIT_OK


def _load_factory(spec: str, input_args: Sequence[str]) -> tuple[Any, tuple, list[str]]:
    import torch

    if spec.startswith("zoo:"):
        import models

        model, inputs = models.get(spec[4:])
        return model, tuple(inputs), []
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{spec!r} is not MODULE:FACTORY (for example mypkg.nets:build)")
    made = _build(spec, module_name, attr)
    specs = [_parse_input(s) for s in input_args]
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        model, inputs = made
        inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
        if specs:
            _check_against(specs, inputs)
        return model, inputs, [s[0] for s in specs]
    if not specs:
        raise ConfigError(f"{spec} returned a model without inputs; give --input NAME:SHAPE")
    gen = torch.Generator().manual_seed(0)
    inputs = tuple(_example(shape, dtype, gen) for _, shape, dtype in specs)
    return made, inputs, [s[0] for s in specs]


def _build(spec: str, module_name: str, attr: str) -> Any:
    """Import `module_name` and call its `attr`; any failure there is a one-line error."""
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot load {spec!r}: {e}") from e
    except Exception as e:  # the user's module failed while importing (SyntaxError included)
        raise ModelLoadError(f"cannot build {spec}: {_one_line(e)}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"cannot load {spec!r}: module {module_name!r} has no callable {attr!r}")
    try:
        return factory()
    except Exception as e:
        raise ModelLoadError(f"cannot build {spec}: {_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    """`Type: first line of the message`, for an exception raised by the user's code."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _parse_input(text: str) -> tuple[str, tuple[int, ...], str]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ConfigError(f"--input {text!r} is not NAME:SHAPE[:DTYPE], e.g. image:1x3x224x224")
    name, shape_text = parts[0], parts[1]
    dtype = parts[2] if len(parts) == 3 else "float32"
    if dtype not in DTYPES:
        raise ConfigError(f"--input {text!r}: dtype {dtype!r} is not one of {DTYPES}")
    try:
        shape = tuple(int(d) for d in shape_text.lower().split("x"))
    except ValueError:
        raise ConfigError(
            f"--input {text!r}: shape {shape_text!r} is not like 1x3x224x224"
        ) from None
    if not name or any(d <= 0 for d in shape):
        raise ConfigError(f"--input {text!r}: need a name and positive dimensions")
    return name, shape, dtype


def _example(shape: tuple[int, ...], dtype: str, gen: Any) -> Any:
    import torch

    if dtype.startswith("float"):
        return torch.randn(shape, generator=gen).to(getattr(torch, dtype))
    if dtype == "bool":
        return torch.randint(0, 2, shape, generator=gen).bool()
    return torch.randint(0, 10, shape, generator=gen).to(getattr(torch, dtype))


def _check_against(specs: list, inputs: tuple) -> None:
    if len(specs) != len(inputs):
        raise ConfigError(f"{len(specs)} --input given, the factory's example has {len(inputs)}")
    for (name, shape, _), t in zip(specs, inputs, strict=True):
        if tuple(t.shape) != shape:
            raise ConfigError(
                f"--input {name}: shape {shape} differs from the factory's example {tuple(t.shape)}"
            )


def _calibration(source: str | None, inputs: tuple) -> Any:
    if source is None:
        return None
    if source.startswith("random:"):
        try:
            n = int(source.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"--calibration {source!r}: expected random:N") from None
        rng = np.random.default_rng(1234)
        return [
            tuple(rng.standard_normal(tuple(t.shape)).astype("float32") for t in inputs)
            for _ in range(n)
        ]
    return source


def _convert_modes(args, model, inputs, calibration, options) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    summary = convert_modes(model, inputs, args.output, modes, calibration=calibration, **options)
    print(modes_table.render_text(summary))
    print(f"wrote {args.output / 'report.html'}")
    return EXIT_PARITY if summary["failed"] else EXIT_OK


def _debug(args: argparse.Namespace) -> int:
    module = _load_factory(args.model, [])[0] if args.model else None
    folders = [args.folder]
    if not (args.folder / "report.json").exists():
        folders = sorted(p.parent for p in args.folder.glob("*/report.json")) or folders
    diverged = False
    for folder in folders:
        layers = localize_dir(folder, module=module, samples=args.samples)
        if len(folders) > 1:
            print(f"== {folder}")
        print(layer_report.render_text(layers))
        diverged |= layers["first_divergence"] is not None
    return EXIT_PARITY if diverged else EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    report = bridge.verify(args.folder)
    print(table(PARITY_HEADER, parity_rows(report)))
    print(summary_line(report))
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    print(describe(args.file))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
