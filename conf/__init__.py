"""Hydra config groups, installed as the package ``instructune.conf`` so that ``pkg://instructune.conf``
finds them in editable and regular installs alike (see pyproject.toml)."""
