"""The workflow's stages (one module per stage); see :mod:`lpntk.stages.common`.

Importing the package loads the plugins the workflow handed to this job (``$LPNTK_PLUGINS``, :mod:`lpntk.plugins`):
the pruning methods, scores and models of one's own that the config's ``plugins`` register.
"""

from ..plugins import plugins_from_env

plugins_from_env()
