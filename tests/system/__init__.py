"""System tests: the ``tunnel`` command as a subprocess."""
