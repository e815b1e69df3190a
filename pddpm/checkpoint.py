"""Resumable training state: written atomically, read back only if it belongs to the same run."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from pddpm.io import atomic_path

log = logging.getLogger("pddpm.checkpoint")


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write `state` to `path` via a temporary file, so a kill mid-write leaves the previous one intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, fingerprint: str) -> dict | None:
    """The saved state if `path` holds a checkpoint of the run `fingerprint`, else None (start afresh)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a foreign or damaged file must not block a fresh start
        log.warning("ignoring unreadable checkpoint %s (%s); training starts afresh", path, exc)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s belongs to other settings; training starts afresh", path)
        return None
    return state
