"""Which torch device a job runs on, and the device-dependent speed settings (docs/training.md, "Devices").

One rule for every job (training, inference, skull stripping): `device: auto` picks CUDA when torch sees
a GPU, else the CPU; `device: cuda` without a GPU is an error naming the key and the fix, never a silent
fall-back to the CPU (a cluster job that lost its GPU would otherwise run for days).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from pddpm.errors import PddpmConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU; `cuda` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PddpmConfigError("device: cuda, but torch sees no CUDA GPU here; set device: auto or cpu "
                               "(or request a GPU: train.gpus / infer.gpus)")
    if name not in ("cpu", "cuda"):
        raise PddpmConfigError(f"device: {name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: a CUDA GPU with bf16 (Ampere and later), a CPU with
    AVX512-BF16 or AMX (oneDNN's check). Elsewhere bf16 autocast is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(device: torch.device, setting: str) -> str:
    """`auto`: bf16 where the device runs it natively (`native_bf16`), else fp32; fp32 and bf16 as set."""
    if setting == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if setting not in ("fp32", "bf16"):
        raise PddpmConfigError(f"precision {setting!r}: expected fp32, bf16 or auto")
    return setting


def autocast(device: torch.device, precision: str):
    """bf16 autocast when `precision` resolves to bf16 (`resolve_precision`, which owns the allowed values),
    on any device (CPUs with AVX512-BF16/AMX run it natively; elsewhere it is slower); fp32 otherwise."""
    if resolve_precision(device, precision) == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def use_channels_last(device: torch.device, setting: bool | None) -> bool:
    """channels-last memory format: as set, or (None) on CUDA only, where cuDNN's convolutions want it."""
    return device.type == "cuda" if setting is None else bool(setting)


def fused_adam(device: torch.device) -> bool:
    """torch's fused Adam kernel exists for CUDA and (torch >= 2.4) the CPU: 4-5x faster steps than the
    default multi-tensor Adam (docs/training.md, "Speed")."""
    return device.type in ("cuda", "cpu")


def configure_backends(device: torch.device) -> None:
    """TF32 matmuls and convolutions on CUDA (as the original's torch did by default then), cuDNN autotuning."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
