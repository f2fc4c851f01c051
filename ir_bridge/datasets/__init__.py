"""Datasets for examples, tests and benchmarks; read without keras or a download."""

from ir_bridge.datasets.mnist import MnistSplit, load, read_idx, verify_md5

__all__ = ["MnistSplit", "load", "read_idx", "verify_md5"]
