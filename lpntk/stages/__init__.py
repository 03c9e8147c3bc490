"""The workflow's stages (one module per stage); see :mod:`lpntk.stages.common`."""
