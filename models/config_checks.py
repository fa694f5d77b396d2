"""Validation shared by the model and training configs."""

from __future__ import annotations


def require_positive(config: object, names: tuple[str, ...]) -> None:
    """Raise ValueError naming the first of `names` whose value on `config` is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
