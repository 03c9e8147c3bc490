"""``python -m lpntk cost ...``: the same as the ``lpntk`` command (:mod:`lpntk.cli`)."""

from .cli import main

raise SystemExit(main())
