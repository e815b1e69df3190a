"""Which torch device a job runs on, and the CUDA-only speed settings."""

from __future__ import annotations

import torch

from pddpm.errors import PddpmConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU; `cuda` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PddpmConfigError("device: cuda, but torch sees no CUDA GPU here; set device: auto or cpu "
                               "(or request a GPU: train.gpus / infer.gpus)")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA when asked; CPU always runs fp32 (bf16 on CPU is slow and changes results)."""
    enabled = device.type == "cuda" and precision == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def configure_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
