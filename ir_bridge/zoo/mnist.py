"""The MNIST model zoo: small Keras models that the frontends and backends are tested on.

Model names, layer classes and layer names are a stable contract: tests, benchmarks and
docs refer to them. Builders return *uncompiled* ``keras.Sequential`` models (conversion
does not need an optimizer); :func:`train` compiles. Every weight initialiser and dropout
layer is seeded from the builder's ``seed``, so the same seed gives the same weights.

keras is imported inside functions only, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import Callable

from ir_bridge.errors import IRBridgeError

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


class _Seeds:
    """Hands out a distinct, reproducible initialiser seed for each layer of one model."""

    def __init__(self, seed: int):
        # Spread seeds apart so model seed s, layer i never collides with seed s+1, layer j.
        self._base = int(seed) * 1000
        self._i = 0

    def next(self) -> int:
        self._i += 1
        return self._base + self._i

    def glorot(self):
        import keras

        return keras.initializers.GlorotUniform(seed=self.next())


def _sequential(name: str, layers: list):
    import keras

    return keras.Sequential([keras.Input(INPUT_SHAPE, name="image"), *layers], name=name)


def mlp_128_128(seed: int = 0):
    """Flatten, Dense 128 relu, Dense 128 relu, Dense 10 softmax; returns an uncompiled Sequential."""
    from keras import layers

    s = _Seeds(seed)
    return _sequential("mlp_128_128", [
        layers.Flatten(name="flatten"),
        layers.Dense(128, activation="relu", kernel_initializer=s.glorot(), name="dense_1"),
        layers.Dense(128, activation="relu", kernel_initializer=s.glorot(), name="dense_2"),
        layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer=s.glorot(), name="output"),
    ])


def mlp_128_32(seed: int = 0):
    """Flatten, Dense 128, ReLU, Dense 32, ReLU, Dense 10, Activation softmax (activations as
    separate layers); returns an uncompiled Sequential."""
    from keras import layers

    s = _Seeds(seed)
    return _sequential("mlp_128_32", [
        layers.Flatten(name="flatten"),
        layers.Dense(128, kernel_initializer=s.glorot(), name="dense_1"),
        layers.ReLU(name="relu_1"),
        layers.Dense(32, kernel_initializer=s.glorot(), name="dense_2"),
        layers.ReLU(name="relu_2"),
        layers.Dense(NUM_CLASSES, kernel_initializer=s.glorot(), name="logits"),
        layers.Activation("softmax", name="softmax"),
    ])


def cnn_tutorial(seed: int = 0):
    """Conv 32 relu, MaxPool 2, Conv 64 relu, MaxPool 2, Flatten, Dense 64 relu, Dense 10
    softmax (3x3 kernels); returns an uncompiled Sequential."""
    from keras import layers

    s = _Seeds(seed)
    return _sequential("cnn_tutorial", [
        layers.Conv2D(32, 3, activation="relu", kernel_initializer=s.glorot(), name="conv_1"),
        layers.MaxPooling2D(2, name="pool_1"),
        layers.Conv2D(64, 3, activation="relu", kernel_initializer=s.glorot(), name="conv_2"),
        layers.MaxPooling2D(2, name="pool_2"),
        layers.Flatten(name="flatten"),
        layers.Dense(64, activation="relu", kernel_initializer=s.glorot(), name="dense_1"),
        layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer=s.glorot(), name="output"),
    ])


def cnn_dropout(seed: int = 0):
    """Conv 28 3x3 (linear), MaxPool 2, Flatten, Dense 128 relu, Dropout 0.2, Dense 10
    softmax; returns an uncompiled Sequential."""
    from keras import layers

    s = _Seeds(seed)
    return _sequential("cnn_dropout", [
        layers.Conv2D(28, 3, kernel_initializer=s.glorot(), name="conv_1"),
        layers.MaxPooling2D(2, name="pool_1"),
        layers.Flatten(name="flatten"),
        layers.Dense(128, activation="relu", kernel_initializer=s.glorot(), name="dense_1"),
        layers.Dropout(0.2, seed=s.next(), name="dropout"),
        layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer=s.glorot(), name="output"),
    ])


def cnn_two_conv(seed: int = 0):
    """Conv 32 relu, Conv 64 relu, MaxPool 2, Flatten, Dense 10 softmax (3x3 kernels);
    returns an uncompiled Sequential."""
    from keras import layers

    s = _Seeds(seed)
    return _sequential("cnn_two_conv", [
        layers.Conv2D(32, 3, activation="relu", kernel_initializer=s.glorot(), name="conv_1"),
        layers.Conv2D(64, 3, activation="relu", kernel_initializer=s.glorot(), name="conv_2"),
        layers.MaxPooling2D(2, name="pool_1"),
        layers.Flatten(name="flatten"),
        layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer=s.glorot(), name="output"),
    ])


#: Every zoo model by name, in a stable order.
MODELS: dict[str, Callable] = {
    "mlp_128_128": mlp_128_128,
    "mlp_128_32": mlp_128_32,
    "cnn_tutorial": cnn_tutorial,
    "cnn_dropout": cnn_dropout,
    "cnn_two_conv": cnn_two_conv,
}


def build(name: str, seed: int = 0):
    """Build the zoo model called ``name`` with ``seed``; returns an uncompiled Sequential.

    Raises ``IRBridgeError`` listing the known names if ``name`` is not one of them.
    """
    try:
        builder = MODELS[name]
    except (KeyError, TypeError):
        raise IRBridgeError(
            f"unknown MNIST zoo model {name!r}; known models: {', '.join(MODELS)}"
        ) from None
    return builder(seed=seed)


def train(model, split, epochs: int = 1, batch_size: int = 128, seed: int = 0, verbose: int = 0) -> float:
    """Compile ``model`` (adam, sparse categorical cross-entropy) and fit it on ``split``.

    Takes a Keras model and an :class:`ir_bridge.datasets.MnistSplit`; seeds Python, numpy
    and the backend with ``seed`` so shuffling and dropout repeat; returns the accuracy on
    the split's held-out test part as a float. The model is trained in place.
    """
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(split.x_train, split.y_train, epochs=epochs, batch_size=batch_size, verbose=verbose)
    results = model.evaluate(split.x_test, split.y_test, batch_size=512, verbose=verbose, return_dict=True)
    return float(results["accuracy"])
