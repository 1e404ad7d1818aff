"""Shared helpers for the reliability tests: tiny models, folder snapshots, CLI runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from bridge import cli


class TinyCNN(nn.Module):
    """conv → ReLU → pool → linear: converts in about a second."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def tiny_cnn(seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A seeded TinyCNN and its 1x3x8x8 example input."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyCNN().eval(), (torch.randn(1, 3, 8, 8),)


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under `folder`, hidden ones included."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def staging_leftovers(*folders: Path) -> list[Path]:
    """Any staging folder, backup folder or lock file of bridge's left in `folders`."""
    patterns = (".*bridge-staging-*", ".*bridge-backup-*", ".*bridge-lock")
    return [p for f in folders if f.exists() for pat in patterns for p in f.glob(pat)]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `bridge -q ...` in-process; returns (exit code, stdout, stderr)."""
    code = cli.main(["-q", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="package")
def tiny_converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified fp32 conversion of `tiny_cnn()`, shared and never modified by tests."""
    import bridge

    model, inputs = tiny_cnn()
    out = tmp_path_factory.mktemp("tiny") / "out"
    bridge.convert(model, inputs, out)
    return out
