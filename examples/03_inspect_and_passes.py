"""Tutorial 3: look inside the IR, and what the default passes do to it.

The origin tutorials print ``model.summary()`` and plot the model's graph.  Here the same
model (the Dropout CNN) is read into ir_bridge's IR: print its summary, run the ``default``
pipeline, print the summary again (Dropout and Flatten gone, activations fused into the
Gemm nodes), draw both graphs, and check with the IR interpreter that the passes changed
nothing numerically.

    python examples/03_inspect_and_passes.py            # trains 1 epoch first
    python examples/03_inspect_and_passes.py --quick    # untrained weights: seconds
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out

import ir_bridge  # noqa: E402
from ir_bridge import viz  # noqa: E402
from ir_bridge.datasets import mnist  # noqa: E402
from ir_bridge.zoo import mnist as zoo  # noqa: E402


def main(argv=None) -> int:
    """Run the tutorial; returns 0 when the optimised graph computes what the original does."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip training")
    parser.add_argument("--out", default="examples_out/03", help="where to write the pictures")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = mnist.load()
    model = zoo.build("cnn_dropout", seed=0)
    if not args.quick:
        zoo.train(model, data, epochs=1, batch_size=32, seed=0)

    # 1. Read the Keras model into the IR: a literal translation, one node per operation
    #    (Dense(activation="relu") becomes Gemm then Relu).
    graph = ir_bridge.load(model)
    print(graph.summary())

    # 2. The default pipeline: drop Dropout, fold Flatten into the next Gemm, fuse activations.
    optimized = ir_bridge.optimize(graph, "default")
    print(optimized.summary())
    print(f"ops before: {graph.op_counts()}")
    print(f"ops after:  {optimized.op_counts()}")

    # 3. Pictures of both graphs (PNG with Graphviz's `dot`, else the DOT text).
    suffix = ".png" if viz.dot_available() else ".gv"
    for tag, g in (("before", graph), ("after", optimized)):
        path = viz.render(g, out / f"cnn_dropout_{tag}{suffix}")
        print(f"wrote {path}")

    # 4. Translation validation: run both graphs with the IR interpreter on real digits.
    report = ir_bridge.check_parity(graph, optimized, data.x_test[:256])
    print(report)
    report.raise_if_failed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
