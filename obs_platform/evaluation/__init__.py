"""Evaluation: metrics at every level of the taxonomy, baselines, calibration, the promotion gate."""
