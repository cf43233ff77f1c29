"""Data: problems, grading, error injection and DPO pairs."""
