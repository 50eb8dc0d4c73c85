"""Lessons' headline results, recorded where the batch runner collects them into summary.json,
each tagged with the hash of the profile that made it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.hashing import config_hash
from .store import atomic_write_json, check_stage_name, stage_dir


def profile_hash(profile: Any) -> str:
    """The identity of a whole profile (every knob): what a lesson's results depend on."""
    return config_hash(profile.to_dict())


def record_results(profile: Any, name: str, data: Any) -> Path:
    """Save a lesson's headline results (JSON) where the batch runner will collect them, tagged
    with the hash of the profile that made them."""
    check_stage_name(name, "name")
    path = stage_dir(profile, "results") / f"{name}.json"
    atomic_write_json(path, {"profile_hash": profile_hash(profile), "results": data})
    return path


def _recorded(profile: Any) -> dict[str, dict[str, Any]]:
    directory = stage_dir(profile, "results")
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def load_results(profile: Any) -> dict[str, Any]:
    """name -> results recorded under this exact profile (those of another config are left out)."""
    current = profile_hash(profile)
    return {name: record["results"] for name, record in _recorded(profile).items()
            if record.get("profile_hash") == current}


def stale_results(profile: Any) -> list[str]:
    """Names of results recorded under another config of this profile (left out of summaries)."""
    return sorted(set(_recorded(profile)) - set(load_results(profile)))
