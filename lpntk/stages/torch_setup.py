"""The torch side of the stages: threads, and the config's model built fresh or loaded from a checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..models import build_model

__all__ = ["set_threads", "build_from_config", "load_reference_model"]


def set_threads(threads: int | None) -> None:
    """Use the rule's ``threads`` for torch's intra-op pool."""
    if threads:
        torch.set_num_threads(int(threads))


def build_from_config(cfg: Mapping, info) -> torch.nn.Module:
    """The config's model for a dataset with ``info`` (input shape, number of classes)."""
    return build_model(cfg["model"]["name"], info.input_shape, info.num_classes, **dict(cfg["model"].get("args") or {}))


def load_reference_model(
    cfg: Mapping, info, checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Rebuild the config's model and load a saved state dict, with a clear error if they do not match."""
    model = build_from_config(cfg, info)
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; run the train step that produces it")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except Exception as err:
        raise ValueError(
            f"checkpoint {path} does not fit model {cfg['model']['name']!r} with args "
            f"{dict(cfg['model'].get('args') or {})}: {str(err).splitlines()[0]}; delete it and "
            f"rerun the train step"
        ) from None
    return model.to(device).eval()
