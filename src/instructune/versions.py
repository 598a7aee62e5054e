"""The software a result was produced with, recorded in every ``summary.json`` so it can be reproduced."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

# The distributions whose releases change results (kernels, tokenisation, generation, peft wrapping).
TRACKED_PACKAGES = ("torch", "transformers", "peft", "lightning", "datasets", "tokenizers", "accelerate",
                    "torchmetrics", "hydra-core", "instructune")


def package_versions() -> dict[str, Any]:
    """Installed versions of the tracked packages (``None`` when absent), Python's, and the CUDA / cuDNN
    builds torch was compiled with and the GPU it sees (``None`` on a CPU build or machine)."""
    import torch

    versions: dict[str, Any] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    versions["cuda"] = torch.version.cuda
    versions["cudnn"] = torch.backends.cudnn.version() if cuda else None
    versions["gpu"] = torch.cuda.get_device_name(0) if cuda else None
    return versions


__all__ = ["package_versions", "TRACKED_PACKAGES"]
