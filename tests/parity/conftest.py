from __future__ import annotations

import models

#: Zoo models whose 224×224 inputs make a conversion take seconds; their sweep runs as `slow`.
BIG = {"mobilenet_v2", "resnet18", "efficientnet_lite0", "mobilenet_v3_small"}


def zoo_params(pytest_module, names=None):
    """pytest params over the zoo, the big image models marked slow."""
    return [
        pytest_module.param(n, marks=pytest_module.mark.slow) if n in BIG else n
        for n in (names or models.names())
    ]
