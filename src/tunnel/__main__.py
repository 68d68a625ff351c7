"""``python -m tunnel``: the same as the ``tunnel`` command."""

from tunnel.cli import main

raise SystemExit(main())
