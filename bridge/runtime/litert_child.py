"""The child process of `bridge.runtime.sandbox`: load, allocate and invoke one .tflite, then exit.

Run as a script: `python litert_child.py MODEL FEEDS THREADS PRESERVE`, FEEDS an .npz of
"<sample>/<input tensor index>" arrays in the .tflite's own layout and dtype, or "-" for seeded
random inputs of the declared shapes. It imports only numpy and LiteRT (about 0.13 s to start)
and prints "stage <name>" before each stage (load, allocate, invoke, release), so a parent that
sees it die knows where.

Exit 0: every stage ran. EXIT_ERROR: LiteRT raised a Python error, which the parent meets again
in-process and reports as usual. Any other status, or a signal: a native crash.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import NoReturn

import numpy as np

EXIT_ERROR = 3
#: Each sample is invoked this often from the reset state: a crash on re-running (a kernel
#: freeing state twice) shows on the second invoke.
INVOKES = 2
SEED = 0


def random_feeds(details: list[dict]) -> dict[int, np.ndarray]:
    """Seeded inputs of the declared shapes: normal floats, integers in range, zero indices."""
    rng = np.random.default_rng(SEED)
    feeds = {}
    for d in details:
        shape, dtype = [max(int(s), 1) for s in d["shape"]], np.dtype(d["dtype"])
        if dtype.kind == "f":
            feeds[d["index"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype in (np.int8, np.uint8, np.int16):
            info = np.iinfo(dtype)
            feeds[d["index"]] = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
        else:  # int32/int64 (token ids, indices) and bool: zero is valid for every use
            feeds[d["index"]] = np.zeros(shape, dtype)
    return feeds


def stored_feeds(path: str) -> list[dict[int, np.ndarray]]:
    """The samples of a FEEDS .npz, in order."""
    samples: dict[int, dict[int, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            sample, index = (int(p) for p in key.split("/"))
            samples.setdefault(sample, {})[index] = data[key]
    return [samples[i] for i in sorted(samples)]


def stage(name: str) -> None:
    print(f"stage {name}", flush=True)


def run(model: str, feeds_path: str, threads: int, preserve: bool) -> None:
    """Load, allocate and invoke `model` on every sample, reading every output back."""
    from ai_edge_litert.interpreter import Interpreter

    warnings.simplefilter("ignore")  # preserve_all_tensors' warning is no crash detail
    stage("load")
    interp = Interpreter(
        model_path=model, num_threads=threads, experimental_preserve_all_tensors=preserve
    )
    stage("allocate")
    interp.allocate_tensors()
    details = interp.get_input_details()
    samples = stored_feeds(feeds_path) if feeds_path != "-" else [random_feeds(details)]
    for feed in samples:
        resized = False
        for d in details:
            if tuple(d["shape"]) != feed[d["index"]].shape:
                interp.resize_tensor_input(d["index"], list(feed[d["index"]].shape))
                resized = True
        if resized:
            stage("allocate")
            interp.allocate_tensors()
        for d in details:
            interp.set_tensor(d["index"], feed[d["index"]])
        for _ in range(INVOKES):
            stage("invoke")
            interp.reset_all_variables()
            interp.invoke()
            for out in interp.get_output_details():
                interp.get_tensor(out["index"])
    stage("release")  # a kernel that frees its state twice aborts here
    del interp


def main(argv: list[str]) -> int:
    model, feeds_path, threads, preserve = argv
    try:
        run(model, feeds_path, int(threads), preserve == "1")
    except Exception as e:  # a Python-level LiteRT error: the parent reports it in-process
        print(f"error {type(e).__name__}: {e}", flush=True)
        return EXIT_ERROR
    return 0


def serve() -> None:
    """Zygote mode (`--serve`): import numpy and LiteRT once, then fork one child per request.

    A request is a JSON line {"argv": [MODEL, FEEDS, THREADS, PRESERVE], "out": path, "err":
    path}; the child writes its stdout to "out" and its stderr to "err". Two JSON lines answer
    it: {"pid": ...} once it started and {"status": ...} once it ended (negative: the signal).
    Ends when its input does (the parent exited).
    """
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401  imported once for every fork

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _forked(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


def _forked(request: dict) -> NoReturn:
    """The forked child: redirect stdout and stderr, run, exit without the zygote's cleanup."""
    code = 1
    try:
        for fd, key in ((1, "out"), (2, "err")):
            target = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        code = main(request["argv"])
    finally:
        sys.stdout.flush()
        os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit(main(sys.argv[1:]))
