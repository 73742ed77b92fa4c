"""Evaluation beyond accuracy: corruptions, attacks, calibration and cost."""
