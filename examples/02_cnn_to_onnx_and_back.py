"""Tutorial 2: a convolutional MNIST classifier to ONNX, and back to Keras.

Mirrors the origin CNN tutorial (Conv 32, pool, Conv 64, pool, Dense 64, Dense 10), then:
convert the trained model to ONNX with validation -> check the file with ``onnx.checker`` ->
run it in onnxruntime -> read the ONNX file back into the IR -> emit a Keras model from it
-> load that ``.keras`` file with Keras -> compare it with the original.

    python examples/02_cnn_to_onnx_and_back.py            # 8000 training images, 2 epochs
    python examples/02_cnn_to_onnx_and_back.py --quick    # 1000 images, 1 epoch: seconds
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out

import numpy as np  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.datasets import mnist  # noqa: E402
from ir_bridge.parity import runner_for  # noqa: E402
from ir_bridge.zoo import mnist as zoo  # noqa: E402


def main(argv=None) -> int:
    """Run the tutorial; returns 0 when every artifact agrees with Keras (else raises)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="train briefly on few images")
    parser.add_argument("--out", default="examples_out/02", help="where to write the models")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Data and the tutorial's CNN.
    data = mnist.load()
    n_train, n_test, epochs = (1000, 500, 1) if args.quick else (len(data.x_train), None, 2)
    split = mnist.MnistSplit(data.x_train[:n_train], data.y_train[:n_train],
                             data.x_test[:n_test], data.y_test[:n_test], data.source)
    model = zoo.build("cnn_tutorial", seed=0)
    model.summary()

    # 2. Train and evaluate.
    accuracy = zoo.train(model, split, epochs=epochs, batch_size=32, seed=0)
    print(f"Keras held-out accuracy after {epochs} epoch(s): {accuracy:.4f}")

    # 3. Keras -> ONNX, validated: both run in their own runtimes (Keras, onnxruntime) on
    #    seeded random inputs, and the report says how close they are.
    onnx_path = out / "cnn_tutorial.onnx"
    _, report = ir_bridge.convert(model, "onnx", onnx_path, validate=True)
    print(report)
    report.raise_if_failed()

    import onnx

    onnx.checker.check_model(onnx.load(str(onnx_path)))
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size:,} bytes): onnx.checker is happy")

    # 4. Run the ONNX file in onnxruntime on real digits.
    (probs,) = runner_for(onnx_path)([split.x_test])
    print(f"onnxruntime held-out accuracy: {np.mean(probs.argmax(1) == split.y_test):.4f}")

    # 5. ... and back: ONNX -> IR (NCHW) -> Keras (NHWC again, the layout pass moves it).
    graph = ir_bridge.load(onnx_path)
    print(f"read back {graph.name!r}: {len(graph)} IR nodes")
    keras_path = out / "cnn_tutorial_from_onnx.keras"
    ir_bridge.convert(onnx_path, "keras", keras_path)

    import keras

    rebuilt = keras.models.load_model(keras_path)
    print(f"wrote {keras_path}: layers {[layer.__class__.__name__ for layer in rebuilt.layers]}")

    # 6. Compare the original Keras model with the round-tripped one on the held-out digits.
    report = ir_bridge.check_parity(model, keras_path, split.x_test)
    print(report)
    report.raise_if_failed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
