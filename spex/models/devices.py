"""Where a model runs and in which precision: ``"auto"`` and dtype names -> torch objects."""

from __future__ import annotations

import torch

from spex.errors import SpexInputError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SpexInputError(f"device {device!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'",
                             field="device") from exc
    check_available(resolved)
    return resolved


def check_available(device: torch.device) -> None:
    """A device the spec names must exist on this machine: torch would fail much later, deep inside
    the first ``.to(device)``, with a bare AssertionError ("Torch not compiled with CUDA enabled")."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SpexInputError(f"device {str(device)!r}: this machine has no CUDA device (torch.cuda.is_available() "
                                 f"is False); fix: use device: auto or cpu, or run where CUDA is", field="device")
        if device.index is not None and device.index >= count:
            raise SpexInputError(f"device {str(device)!r}: this machine has {count} CUDA device(s) (0-{count - 1}); "
                                 f"fix: pick one of them, or device: auto", field="device")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SpexInputError("device 'mps': this machine has no MPS device; fix: use device: auto or cpu",
                                 field="device")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Default: bf16 on CUDA (fp16 where bf16 is unsupported), fp32 elsewhere (CPU half is slow)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise SpexInputError(f"dtype {dtype!r} is not supported; use one of {sorted(_DTYPES)} or None for the default")
    return _DTYPES[dtype]
