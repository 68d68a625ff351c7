"""cli: the ``tunnel`` command: run, check, status, reload, demo, gen-cert.

The only room that prints to the user or exits. Room rules: may import every other room.
"""
