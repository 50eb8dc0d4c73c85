"""Hub access with one clear error when there is no network (instead of a deep traceback)."""
from __future__ import annotations

import contextlib
import importlib
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")
HUB_HOST = "huggingface.co"


class HubUnavailableError(ValueError):
    """A hub model or data set was asked for, but the hub cannot be reached or is not cached."""


class HubCacheError(ValueError):
    """Offline, a hub model or data set is in the local cache but could not be loaded from it."""


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hugging Face hub answers a TCP connection (and offline mode is not forced)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def offline_message(what: str) -> str:
    return (
        f"cannot load {what} from the Hugging Face hub: there is no network connection and it "
        "is not in the local HF cache. Use the offline profile instead: load_profile('tiny') "
        "(or PROFILE = 'tiny' in a notebook), or connect to the internet / point HF_HOME at a "
        "cache that holds it."
    )


def from_hub(what: str, load: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a hub loader; offline, try the local cache only and fail with one clear message."""
    online = hub_reachable()
    if not online:
        kwargs = {**kwargs, **_offline_kwargs(load)}
    try:
        with contextlib.nullcontext() if online else _offline_mode():
            return load(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - offline: not cached, or a damaged cached copy
        if online:
            raise
        cached = cached_copy(str(args[0])) if args else None
        if cached is not None:
            raise HubCacheError(
                f"cannot load {what}: there is no network connection, and its copy in the local "
                f"cache ({cached}) failed to load ({type(err).__name__}: {str(err)[:200]}), so "
                f"it is damaged or incomplete. Delete {cached} and load it again with a network "
                "connection, or use the offline profile: load_profile('tiny')") from None
        raise HubUnavailableError(offline_message(what)) from err.__class__(str(err)[:200])


def cached_copy(repo_id: str) -> Path | None:
    """The folder where the local Hugging Face caches hold `repo_id` (a model or a data set),
    or None when they hold nothing of it."""
    candidates = []
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants

        folder = repo_id.replace("/", "--")
        candidates += [Path(constants.HF_HUB_CACHE) / f"{kind}--{folder}"
                       for kind in ("models", "datasets")]
    if "datasets" in sys.modules:  # its own cache of prepared data sets
        candidates.append(Path(sys.modules["datasets"].config.HF_DATASETS_CACHE)
                          / repo_id.replace("/", "___"))
    return next((p for p in candidates if p.is_dir() and any(p.iterdir())), None)


def _offline_kwargs(load: Callable[..., Any]) -> dict[str, Any]:
    """Keyword that makes a transformers loader use the local cache only."""
    func = getattr(load, "__func__", load)
    name = getattr(func, "__qualname__", "") or getattr(load, "__name__", "")
    return {"local_files_only": True} if "from_pretrained" in name else {}


@contextlib.contextmanager
def _offline_mode():
    """Tell huggingface_hub and datasets to use the local cache only (no slow retries)."""
    saved = []
    for module_name in ("huggingface_hub.constants", "datasets.config"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, "HF_HUB_OFFLINE"):
            saved.append((module, module.HF_HUB_OFFLINE))
            module.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for module, value in saved:
            module.HF_HUB_OFFLINE = value
