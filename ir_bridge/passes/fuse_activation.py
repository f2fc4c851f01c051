"""fuse-activation: fold an activation into the Gemm/Conv/ConvTranspose that feeds it.

``host -> act`` becomes one host node with ``activation=act.op`` and
``activation_attrs=act.attrs`` when:

1. the host has no activation yet;
2. the activation is the host's only user and the host is not a graph output (the
   pre-activation value must not be needed elsewhere);
3. the activation is in ``FUSIBLE_ACTIVATIONS`` (unary, parameter-free).

The fused node keeps the host's name; users of the activation read the host.
"""

from __future__ import annotations

from ..ir.opset import FUSIBLE_ACTIVATIONS, FUSION_HOSTS
from .base import register_pass


@register_pass("fuse-activation", "Fuse Relu/Sigmoid/Tanh/Softmax/… into the preceding "
               "Gemm, Conv or ConvTranspose.", after=("fold-batchnorm",))
def fuse_activation(graph, ctx) -> bool:
    changed = False
    for act in list(graph):
        if act.op not in FUSIBLE_ACTIVATIONS:
            continue
        host = graph.node(act.inputs[0])
        if host.op not in FUSION_HOSTS:
            continue
        if host.attrs.get("activation"):
            ctx.explain(act, f"{host.name} already has activation {host.attrs['activation']}")
            continue
        if not graph.has_one_use(host):
            ctx.explain(act, f"{host.name}'s value is used elsewhere too")
            continue
        host.attrs["activation"] = act.op
        host.attrs["activation_attrs"] = dict(act.attrs)
        graph.replace_all_uses_with(act, host)
        graph.remove_node(act)
        changed = True
    return changed
