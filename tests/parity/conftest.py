from __future__ import annotations

from collections.abc import Mapping, Sequence

import models
from bridge.runtime import tolerances

#: Zoo models whose 224×224 inputs make a conversion take seconds; their sweep runs as `slow`.
BIG = {"mobilenet_v2", "resnet18", "efficientnet_lite0", "mobilenet_v3_small"}


def zoo_params(
    pytest_module,
    names: Sequence[str] | None = None,
    known_failures: Mapping[str, str] | None = None,
) -> list:
    """pytest params over the zoo: big image models marked slow, known failures strict xfail."""
    params = []
    for name in names or models.names():
        marks = [pytest_module.mark.slow] if name in BIG else []
        if known_failures and name in known_failures:
            marks.append(pytest_module.mark.xfail(strict=True, reason=known_failures[name]))
        params.append(pytest_module.param(name, marks=marks, id=name))
    return params


def check_floors(report: Mapping) -> None:
    """Every sample of every pair met its floor; fixed-rule floors are tolerances.floor's."""
    mode = report["mode"]
    for pair in tolerances.pairs(mode):
        for out, c in report["parity"][pair].items():
            got = list(zip(c["sqnr_db_per_sample"], c["floor_db_per_sample"], strict=True))
            assert c["passed"] and all(s >= f for s, f in got), f"{pair} {out}: {got}"
            if tolerances.rule(mode, pair) == "fixed":
                assert {f for _, f in got} == {tolerances.floor(mode, pair)}, (pair, out, got)
