"""``rewind bench``: the benchmark harness (``suite``), its shared setup and one module per group."""
