"""Model families (SpinNet, baseline), configs, training loop, checkpoints and .spinnet compression."""

from __future__ import annotations

from typing import Any


def load_spinnet(path: Any, device: str = "cpu") -> Any:
    """`trainers.spinnet_file.load_spinnet`, imported lazily so that `import trainers` stays light (no torch)."""
    from trainers.spinnet_file import load_spinnet as _load_spinnet

    return _load_spinnet(path, device=device)
