"""Tutorial 1: a dense MNIST classifier from training to the ir_bridge MDF engine.

Mirrors the origin MLP tutorial step by step, then goes one step further through the public
API: build -> summary -> train -> evaluate -> convert to ModECI MDF -> run the MDF file with
ir_bridge's numpy engine (no TensorFlow) -> compare with Keras -> predict one digit.

    python examples/01_mlp_train_convert_run.py            # 8000 training images, 3 epochs
    python examples/01_mlp_train_convert_run.py --quick    # 1000 images, 1 epoch: seconds
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out

import numpy as np  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.datasets import mnist  # noqa: E402
from ir_bridge.zoo import mnist as zoo  # noqa: E402


def main(argv=None) -> int:
    """Run the tutorial; returns 0 when the MDF engine agrees with Keras (else raises)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="train briefly on few images")
    parser.add_argument("--out", default="examples_out/01", help="where to write the model")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Data: the MNIST test set bundled with ir_bridge, split 8000 train / 2000 held out.
    data = mnist.load()
    n_train, epochs = (1000, 1) if args.quick else (len(data.x_train), 3)
    x_train, y_train = data.x_train[:n_train], data.y_train[:n_train]
    x_test, y_test = data.x_test, data.y_test
    print(f"data: {len(x_train)} training images, {len(x_test)} held out")

    # 2. The model of the tutorial: Flatten, Dense 128 relu, Dense 128 relu, Dense 10 softmax.
    model = zoo.build("mlp_128_128", seed=0)
    model.summary()

    # 3. Train and evaluate (zoo.train compiles with adam and seeds everything).
    split = mnist.MnistSplit(x_train, y_train, x_test, y_test, data.source)
    accuracy = zoo.train(model, split, epochs=epochs, batch_size=32, seed=0)
    print(f"Keras held-out accuracy after {epochs} epoch(s): {accuracy:.4f}")

    # 4. Convert: Keras -> IR -> default passes -> MDF JSON.
    path = out / "mlp_128_128.mdf.json"
    ir_bridge.convert(model, "mdf", path)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")

    # 5. Run the MDF file with ir_bridge's engine: plain numpy, no TensorFlow involved.
    (probs,) = ir_bridge.run(path, x_test)
    mdf_accuracy = float(np.mean(probs.argmax(1) == y_test))
    print(f"MDF engine held-out accuracy: {mdf_accuracy:.4f}")

    # 6. Compare: Keras and the MDF file, each in its own runtime, on the held-out images.
    report = ir_bridge.check_parity(model, path, x_test)
    print(report)
    report.raise_if_failed()

    # 7. Predict one digit, as the tutorial does.
    i = 0
    print(f"digit {i}: predicted {probs[i].argmax()} (true {y_test[i]}), "
          f"confidence {probs[i].max():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
