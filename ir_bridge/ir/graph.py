"""The IR graph: nodes keyed by name, topology in a ``networkx.DiGraph``.

The ``DiGraph`` holds an edge ``producer -> user`` for every use (``uses`` counts a value
used twice by one node); each node's ``inputs`` tuple holds the order.  Every mutation goes
through a method of :class:`Graph` that keeps both in step, so a pass cannot leave use–def
links inconsistent.  Iterating a graph yields its nodes in topological order (ties broken by
insertion order, so the order is deterministic).
"""

from __future__ import annotations

import copy as _copy
import re
from typing import Any, Iterable, Iterator, Mapping

import networkx as nx
import numpy as np

from ..errors import IRBridgeError
from .node import Node
from .schema import get_schema

_NAME_OK = re.compile(r"[^0-9A-Za-z_.\-/]")


class Graph:
    """A dataflow graph of :class:`Node`\\ s with ordered inputs and outputs.

    Example::

        g = Graph("mlp")
        x = g.add_input("x", (None, 4))
        h = g.add_node("Gemm", [x], params={"W": np.ones((4, 2), "float32")})
        g.set_outputs([h])
    """

    def __init__(self, name: str = "model"):
        self.name = name
        self.meta: dict[str, Any] = {}
        self._nodes: dict[str, Node] = {}
        self._dag = nx.DiGraph()
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._rank: dict[str, int] = {}
        self._counter = 0
        self._order: list[str] | None = None

    # ------------------------------------------------------------ reading

    def __iter__(self) -> Iterator[Node]:
        return iter([self._nodes[n] for n in self._topo()])

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._nodes

    def __getitem__(self, name: str) -> Node:
        return self.node(name)

    def node(self, name: str) -> Node:
        """The node called ``name``; an unknown name raises ``IRBridgeError``."""
        try:
            return self._nodes[_name_of(name)]
        except KeyError:
            raise IRBridgeError(f"graph {self.name!r} has no node {name!r}") from None

    @property
    def inputs(self) -> list[Node]:
        """The graph inputs (``Input`` nodes) in declaration order."""
        return [self._nodes[n] for n in self._inputs]

    @property
    def outputs(self) -> list[Node]:
        """The nodes whose values the graph returns, in order."""
        return [self._nodes[n] for n in self._outputs]

    @property
    def output_names(self) -> list[str]:
        """Names of the output nodes, in order."""
        return list(self._outputs)

    def users(self, name: str | Node) -> list[Node]:
        """The nodes that read ``name``'s value, in insertion order."""
        return sorted((self._nodes[u] for u in self._dag.successors(_name_of(name))),
                      key=lambda n: self._rank[n.name])

    def is_output(self, name: str | Node) -> bool:
        """Whether ``name`` is one of the graph outputs."""
        return _name_of(name) in self._outputs

    def has_one_use(self, name: str | Node) -> bool:
        """Whether exactly one node reads ``name``'s value and it is not a graph output: the
        condition for fusing it into its reader (nothing else would still need the value)."""
        name = _name_of(name)
        return self._dag.out_degree(name) == 1 and name not in self._outputs

    def count_params(self) -> int:
        """Total number of weights in all nodes' params."""
        return sum(n.num_params for n in self._nodes.values())

    def op_counts(self) -> dict[str, int]:
        """How many nodes of each op the graph holds."""
        counts: dict[str, int] = {}
        for node in self._nodes.values():
            counts[node.op] = counts.get(node.op, 0) + 1
        return counts

    def networkx(self) -> nx.DiGraph:
        """A read-only view of the topology (for pattern matching and drawing)."""
        return self._dag.copy(as_view=True)

    # ------------------------------------------------------------ building

    def unique_name(self, base: str) -> str:
        """``base`` made safe and unique in this graph (``base_1``, ``base_2``… if taken)."""
        return fresh_name(_NAME_OK.sub("_", str(base)) or "node", self._nodes)

    def add_node(
        self,
        op: str,
        inputs: Iterable[str | Node] = (),
        *,
        name: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        origin: str | None = None,
        infer: bool = True,
    ) -> Node:
        """Create a node of ``op`` reading ``inputs``; returns it.

        Attributes are completed with the schema's defaults and checked; ``params`` become
        numpy arrays; the name defaults to a unique one derived from ``origin`` or ``op``.
        With ``infer`` the output type is computed at once when the input types are known.
        """
        schema = get_schema(op)
        inputs = tuple(_name_of(i) for i in inputs)
        where = f"node {name or origin or op!r}: "
        for i in inputs:
            if i not in self._nodes:
                raise IRBridgeError(f"{where}input {i!r} is not in the graph")
        if name is None:
            name = self.unique_name(origin or op.lower())
        elif name in self._nodes:
            raise IRBridgeError(f"a node named {name!r} already exists in graph {self.name!r}")
        params = {k: np.asarray(v) for k, v in (params or {}).items()}
        node = Node(name, op, inputs, schema.fill_attrs(attrs, where), params, origin=origin)
        self._nodes[node.name] = node
        self._rank[node.name] = self._counter
        self._counter += 1
        self._dag.add_node(node.name)
        self._link(node.name, inputs)
        if op == "Input":
            self._inputs.append(node.name)
        if infer:
            self._infer_one(node)
        return node

    def add_input(self, name: str, shape, dtype: str = "float32", origin: str | None = None) -> Node:
        """Declare a graph input of ``shape`` (``None`` for unknown dims) and ``dtype``."""
        return self.add_node("Input", name=name, attrs={"shape": tuple(shape), "dtype": dtype},
                             origin=origin or name)

    def set_outputs(self, outputs: Iterable[str | Node]) -> None:
        """Declare which nodes' values the graph returns, in order."""
        names = [_name_of(o) for o in outputs]
        for n in names:
            self.node(n)
        self._outputs = names

    # ------------------------------------------------------------ mutating

    def set_inputs(self, node: str | Node, inputs: Iterable[str | Node]) -> None:
        """Replace ``node``'s inputs, keeping the topology in step."""
        node = self.node(_name_of(node))
        inputs = tuple(_name_of(i) for i in inputs)
        for i in inputs:
            if i not in self._nodes:
                raise IRBridgeError(f"node {node.name!r}: input {i!r} is not in the graph")
        for pred in list(self._dag.predecessors(node.name)):
            self._dag.remove_edge(pred, node.name)
        node.inputs = inputs
        self._link(node.name, inputs)
        self._order = None

    def replace_all_uses_with(self, old: str | Node, new: str | Node) -> int:
        """Make every user of ``old`` (and the graph outputs) read ``new``; returns the count."""
        old, new = _name_of(old), _name_of(new)
        self.node(new)
        count = 0
        for user in self.users(old):
            if user.name == new:
                continue  # ``new`` itself reads ``old``: rewiring it would make a cycle
            self.set_inputs(user, [new if i == old else i for i in user.inputs])
            count += 1
        if old in self._outputs:
            self._outputs = [new if o == old else o for o in self._outputs]
            count += 1
        return count

    def remove_node(self, node: str | Node, safe: bool = True) -> None:
        """Delete ``node``.  With ``safe`` it refuses (changing nothing) while the node has
        users or is a graph output."""
        name = _name_of(node)
        self.node(name)
        if safe:
            users = [u.name for u in self.users(name)]
            if users or name in self._outputs:
                where = f"users {users}" if users else "it is a graph output"
                raise IRBridgeError(f"cannot remove node {name!r}: {where}")
        self._dag.remove_node(name)
        del self._nodes[name]
        del self._rank[name]
        if name in self._inputs:
            self._inputs.remove(name)
        self._outputs = [o for o in self._outputs if o != name]
        self._order = None

    def bypass(self, node: str | Node) -> None:
        """Remove a one-input node, rewiring its users (and outputs) to its input."""
        node = self.node(_name_of(node))
        if len(node.inputs) != 1:
            raise IRBridgeError(f"cannot bypass {node.name!r}: it has {len(node.inputs)} inputs")
        self.replace_all_uses_with(node.name, node.inputs[0])
        self.remove_node(node.name)

    def insert_after(self, producer: str | Node, op: str, *, users: Iterable[Node] | None = None,
                     **kwargs) -> Node:
        """Add ``op`` reading ``producer`` and make ``users`` (default: all users and the
        outputs) read the new node instead."""
        producer = _name_of(producer)
        targets = list(self.users(producer)) if users is None else list(users)
        new = self.add_node(op, [producer], **kwargs)
        for user in targets:
            self.set_inputs(user, [new.name if i == producer else i for i in user.inputs])
        if users is None and producer in self._outputs:
            self._outputs = [new.name if o == producer else o for o in self._outputs]
        return new

    def rename(self, node: str | Node, new_name: str) -> None:
        """Rename a node, updating every reference to it."""
        old = _name_of(node)
        if new_name == old:
            return
        if new_name in self._nodes:
            raise IRBridgeError(f"cannot rename {old!r}: {new_name!r} exists")
        n = self.node(old)
        users = self.users(old)
        # Move the node's edges by hand: networkx's in-place relabel_nodes walks the whole
        # graph (O(n) per call, ~0.4 ms at 8k nodes), which made renaming every node of a
        # deep graph quadratic.
        dag = self._dag
        dag.add_node(new_name, **dag.nodes[old])
        dag.add_edges_from((new_name, v, d) for _, v, d in dag.out_edges(old, data=True))
        dag.add_edges_from((u, new_name, d) for u, _, d in dag.in_edges(old, data=True))
        dag.remove_node(old)
        n.name = new_name
        self._nodes[new_name] = self._nodes.pop(old)  # order lives in _rank, not here
        self._rank[new_name] = self._rank.pop(old)
        for u in users:
            u.inputs = tuple(new_name if i == old else i for i in u.inputs)
        self._inputs = [new_name if i == old else i for i in self._inputs]
        self._outputs = [new_name if o == old else o for o in self._outputs]
        if self._order is not None:  # the order is unchanged: rename in place
            self._order[self._order.index(old)] = new_name

    def copy(self) -> "Graph":
        """A deep copy (weights arrays are shared: they are never mutated in place)."""
        new = Graph(self.name)
        new.meta = _copy.deepcopy(self.meta)
        new._counter = self._counter
        for name in self._topo():
            n = self._nodes[name]
            c = Node(n.name, n.op, n.inputs, _copy.deepcopy(n.attrs), dict(n.params), n.type,
                     n.origin, _copy.deepcopy(n.meta))
            new._nodes[name] = c
            new._rank[name] = self._rank[name]
        new._dag = self._dag.copy()
        new._inputs = list(self._inputs)
        new._outputs = list(self._outputs)
        return new

    # ------------------------------------------------------------ types

    def infer_shapes(self) -> None:
        """Recompute every node's type in topological order from the schema shape functions."""
        for node in self:
            self._infer_one(node, strict=True)

    def _infer_one(self, node: Node, strict: bool = False) -> None:
        types = [self._nodes[i].type for i in node.inputs]
        if any(t is None for t in types):
            if strict:
                raise IRBridgeError(f"node {node.name!r}: input types unknown")
            return
        try:
            node.type = get_schema(node.op).infer(node, types)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            origin = f" (from {node.origin!r})" if node.origin and node.origin != node.name else ""
            inputs = ", ".join(str(t) for t in types)
            raise IRBridgeError(
                f"node {node.name!r}{origin}: {node.op} cannot take inputs [{inputs}]: {exc}"
            ) from exc

    # ------------------------------------------------------------ checking / printing

    def verify(self) -> None:
        """Check every invariant; raise one ``VerificationError`` listing all problems."""
        from .verify import verify

        verify(self)

    def format(self) -> str:
        """An fx-style text dump of the graph, one node a line."""
        lines = [f"graph {self.name}({', '.join('%' + i for i in self._inputs)}):"]
        lines += ["    " + n.format() for n in self]
        lines.append(f"    return ({', '.join('%' + o for o in self._outputs)})")
        return "\n".join(lines)

    def summary(self) -> str:
        """A ``model.summary()``-like table: node, op, origin, output shape, params."""
        from .printer import summary

        return summary(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self)} nodes, {self.count_params()} params>"

    # ------------------------------------------------------------ internals

    def _link(self, name: str, inputs: tuple[str, ...]) -> None:
        for i in inputs:
            if self._dag.has_edge(i, name):
                self._dag[i][name]["uses"] += 1
            else:
                self._dag.add_edge(i, name, uses=1)
        self._order = None

    def _topo(self) -> list[str]:
        if self._order is None:
            try:
                self._order = list(
                    nx.lexicographical_topological_sort(self._dag, key=self._rank.__getitem__)
                )
            except nx.NetworkXUnfeasible:
                cycle = nx.find_cycle(self._dag)
                raise IRBridgeError(
                    f"graph {self.name!r} has a cycle: {' -> '.join(u for u, _ in cycle)}"
                ) from None
        return self._order


def fresh_name(base: str, taken) -> str:
    """``base``, or ``base_1``, ``base_2``… : the first not in ``taken`` (a set or mapping)."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _name_of(x: str | Node) -> str:
    return x.name if isinstance(x, Node) else x
