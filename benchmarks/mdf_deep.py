"""Deep MDF graphs: time per node of reading (and writing) MDF as the chain grows.

Run by hand (not in CI; two to three minutes)::

    python benchmarks/mdf_deep.py                       # 1k, 2k, 4k, 8k nodes
    python benchmarks/mdf_deep.py --nodes 1000,16000 --repeat 5 --markdown out.md

Each graph is one input and a chain of ``N`` small nodes (``Gemm`` 4x4 + ``Relu``
fused, then ``Add`` of a constant, alternating; 4 values wide, so the weights are noise
and the time is the per-node work). For each ``N`` it times, as medians over
``--repeat`` rounds:

* ``write``: ``ir_bridge.emit(graph, "mdf", path)`` (build the modeci_mdf objects, write
  the JSON);
* ``read``: ``ir_bridge.load(path)`` (the MDF frontend: parse, translate to the IR);
* ``compile``: ``compile_mdf(path)`` (read, default passes, plan).

A reader that is linear in the number of nodes has a flat time per node down the table;
one that rescans something per node shows a time per node that doubles with ``N``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def chain(n: int):
    """An IR graph: input (None, 4), then ``n`` nodes alternating Gemm(+Relu) and Add."""
    from ir_bridge.ir import Graph

    rng = np.random.default_rng(0)
    g = Graph(f"chain{n}")
    x = g.add_input("x", (None, 4))
    for i in range(n):
        if i % 2 == 0:
            x = g.add_node("Gemm", [x], name=f"dense{i}",
                           params={"W": rng.standard_normal((4, 4)).astype("float32") * 0.5,
                                   "B": rng.standard_normal(4).astype("float32") * 0.1},
                           attrs={"activation": "Relu", "activation_attrs": {}})
        else:
            x = g.add_node("Add", [x], name=f"shift{i}",
                           params={"B": rng.standard_normal(4).astype("float32") * 0.1})
    g.set_outputs([x])
    g.infer_shapes()
    return g


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(n: int, repeat: int, work: Path) -> dict:
    import ir_bridge
    from ir_bridge.engine.mdf_plan import compile_mdf

    graph = chain(n)
    path = work / f"chain{n}.json"
    write = _median_time(lambda: ir_bridge.emit(graph, "mdf", path), repeat)
    read = _median_time(lambda: ir_bridge.load(path), repeat)
    compiled = _median_time(lambda: compile_mdf(path), repeat)
    back = ir_bridge.load(path)
    assert len(back) == n + 1, (len(back), n)  # the chain reads back node for node
    x = np.random.default_rng(1).standard_normal((3, 4)).astype("float32")
    (want,) = ir_bridge.run(graph, [x])
    (got,) = compile_mdf(path).run([x])
    assert np.allclose(got, want, atol=1e-4), "the compiled chain computes the chain"
    return {"nodes": n, "file_kib": round(path.stat().st_size / 1024),
            "write_s": write, "read_s": read, "compile_s": compiled}


def markdown(rows: list[dict]) -> str:
    lines = ["| nodes | file (KiB) | write (s) | write / node (us) | read (s) | "
             "read / node (us) | compile (s) | compile / node (us) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        n = r["nodes"]
        lines.append(f"| {n:,} | {r['file_kib']:,} | {r['write_s']:.2f} | "
                     f"{1e6 * r['write_s'] / n:.0f} | {r['read_s']:.2f} | "
                     f"{1e6 * r['read_s'] / n:.0f} | {r['compile_s']:.2f} | "
                     f"{1e6 * r['compile_s'] / n:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", default="1000,2000,4000,8000",
                    help="comma-separated chain lengths")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per measurement (median)")
    ap.add_argument("--markdown", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.nodes.split(",") if s]
    print(f"Python {platform.python_version()}, numpy {np.__version__}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ir_bridge_deep_") as tmp:
        for n in sizes:
            rows.append(measure(n, args.repeat, Path(tmp)))
            r = rows[-1]
            print(f"{n} nodes: write {r['write_s']:.2f} s, read {r['read_s']:.2f} s, "
                  f"compile {r['compile_s']:.2f} s", flush=True)
    table = markdown(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
