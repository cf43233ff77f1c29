"""The ``rewind`` command line: ``cli.py`` and one module per command (``add_arguments``, ``run``).
Nothing outside this package imports it."""
