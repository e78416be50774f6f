"""Evaluation: per-attribute linear and kNN probes on frozen features."""

from mcl.evaluation.probes import PROBES, knn_probe, linear_probe

__all__ = ["PROBES", "knn_probe", "linear_probe"]
