"""``python -m livewidget``: the same as the ``livewidget`` command."""

from .cli import main

raise SystemExit(main())
