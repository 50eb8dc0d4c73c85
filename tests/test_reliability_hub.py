"""Offline, a damaged copy in the local HF cache is reported as such, not as "no network"
(issue 21)."""
import pytest

import huggingface_hub.constants

from memdec_helpers.runtime.hub import HubUnavailableError, from_hub


def corrupt_loader(*args, **kwargs):
    raise OSError("Unable to load weights from checkpoint file: header too large")


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_a_damaged_cached_model_is_not_called_no_network(offline_cache):
    snapshot = offline_cache / "models--someone--mymodel" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"in the local cache .*models--someone--mymodel.*"
                                         r"OSError: Unable to load weights.*damaged or "
                                         r"incomplete\. Delete") as caught:
        from_hub("base model 'someone/mymodel'", corrupt_loader, "someone/mymodel")
    assert not isinstance(caught.value, HubUnavailableError)
    assert "not in the local HF cache" not in str(caught.value)  # the old, wrong diagnosis


def test_a_model_not_in_the_cache_is_still_no_network(offline_cache):
    with pytest.raises(HubUnavailableError, match="no network connection"):
        from_hub("base model 'someone/other'", corrupt_loader, "someone/other")
