"""Model zoos: small, named, reproducible models to convert, test and benchmark."""

from ir_bridge.zoo.mnist import MODELS, build, train

__all__ = ["MODELS", "build", "train"]
