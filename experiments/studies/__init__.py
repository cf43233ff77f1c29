"""Studies that write a run folder: the demo, evaluation (sharded), threshold sweep, ablation, and
the statistics and plots they share."""
