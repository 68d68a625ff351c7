"""``python -m tunnel``: the same as the ``tunnel`` command."""

from tunnel.cli.main import main

raise SystemExit(main())
