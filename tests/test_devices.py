"""Precision: fp16 + GradScaler on GPUs without native bf16 (T4), bf16 where native."""
import pytest
import torch

from memdec_helpers.runtime.devices import autocast_dtype


@pytest.mark.parametrize("capability,want", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                             ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_dtype_follows_compute_capability(monkeypatch, capability, want):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts
    assert autocast_dtype(torch.device("cuda"), "auto") == want


def test_explicit_dtypes_and_cpu():
    cuda = torch.device("cuda")
    assert autocast_dtype(cuda, "float32") is None
    assert autocast_dtype(cuda, "float16") == torch.float16
    assert autocast_dtype(torch.device("cpu"), "auto") is None
