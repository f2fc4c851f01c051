"""Hypothesis strategies building random *valid* Keras models from the layers the Keras
frontend supports, plus their random inputs.

A drawn example is a :class:`ModelSpec`: plain data (input shapes, a list of layer calls with
their keyword arguments and input tensors, the outputs, a weight seed and an input seed).
``spec.build()`` makes the ``keras.Model`` (Sequential or Functional), assigns seeded
non-trivial weights (batch-norm moving statistics, biases, PReLU slopes all random) and
``spec.make_inputs()`` the inputs.  ``repr(spec)`` is a runnable Python program that
rebuilds the model, so a failing example hypothesis prints is already a reproduction.

While drawing, every proposed layer is checked with Keras's own ``compute_output_shape`` on
a throwaway instance: a layer Keras would refuse (kernel larger than its input, zero-size
outputs) is simply not added, so every example is a real test.

Coverage: Dense on any rank; Conv1D/2D/3D with strides, paddings (valid, same, causal),
dilations and groups; DepthwiseConv1D/2D and SeparableConv1D/2D; Conv1D/2D/3DTranspose with
output padding; max/average pools (1-3-D, valid/same) and global pools (keepdims or not);
BatchNormalization on any axis with random moving statistics; LayerNormalization over
trailing blocks of axes; Normalization and Rescaling; activations as strings (on Dense and
convs) and as layers (Activation, ReLU with slope/cap/threshold, LeakyReLU, ELU, PReLU with
shared axes, Softmax on any axis); the Dropout family, GaussianNoise, Identity,
ActivityRegularization; Flatten, Reshape, Permute; ZeroPadding/Cropping/UpSampling 1-3-D;
Embedding on integer inputs; and, in Functional models, residual branches, squeeze-excite
gates broadcast from (N, 1, 1, C) or (N, C), concatenations on any axis, merges with
earlier tensors, second inputs and several outputs.

Known bugs (``KNOWN_BUGS``, at the end) are still generated: a model that can trigger one
has the failures of that bug's stages tolerated (every other stage still must match), unless
``IR_BRIDGE_FUZZ_KNOWN=1``.  Each entry names the strict-xfail regression test in
``test_model_fuzz.py`` that tracks it.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from hypothesis import reject, strategies as st

from ir_bridge.frontends.keras_layers import ACTIVATIONS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: Upper bound on the elements of one sample of any tensor (the batch is 4): keeps every
#: model cheap to run in four runtimes.
MAX_ELEMENTS = 2048
MAX_PARAMS = 20_000

#: Keras activation names usable as ``activation=`` strings: all the frontend knows.
ACTIVATION_NAMES = sorted(ACTIVATIONS)
#: Activations drawn: all but ``exponential``.  exp multiplies the relative error of its
#: input by the input itself: after a product of three tensors or another exp the inputs
#: reach 80 and float32 rounding differences of a few ulps between runtimes become 2e-5
#: of the output (the long run found exactly that, twice, and nothing else); it is covered
#: by ``test_model_fuzz.test_exponential_activation_converts`` on bounded inputs instead.
SAFE_ACTIVATIONS = [a for a in ACTIVATION_NAMES if a != "exponential"]

INPUT_KINDS = ("image", "sequence", "vector", "volume", "tokens")
#: How often each input kind is drawn (images are the main workload).
KIND_WEIGHTS = {"image": 6, "sequence": 3, "vector": 1, "volume": 2, "tokens": 1}


# --------------------------------------------------------------------------- known bugs


@dataclass(frozen=True)
class KnownBug:
    """A bug the fuzzer found whose fix is pending.

    ``matches(spec)`` says whether a model can trigger it; ``stages`` are the conversion
    stages (see ``test_model_fuzz.check_spec``) whose failure it explains.  The quick
    profile tolerates failures of exactly those stages on exactly those models (the model
    still goes through every other stage); ``test`` names the strict-xfail regression test
    that turns into an XPASS failure once the fix lands (then delete the entry)."""

    bug_id: str
    summary: str
    test: str
    stages: tuple
    matches: Callable[["ModelSpec"], bool]


KNOWN_BUGS: dict[str, KnownBug] = {}


def known_bug(bug_id: str, summary: str, test: str, stages: tuple):
    """Decorator registering ``matches(spec)`` as the trigger of a :class:`KnownBug`."""

    def wrap(fn):
        KNOWN_BUGS[bug_id] = KnownBug(bug_id, summary, test, tuple(stages), fn)
        return fn

    return wrap


def tolerated_bugs() -> dict:
    """The known bugs whose stage failures are tolerated (none with
    ``IR_BRIDGE_FUZZ_KNOWN=1``: then every known failure shows again)."""
    if os.environ.get("IR_BRIDGE_FUZZ_KNOWN"):
        return {}
    return dict(KNOWN_BUGS)


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class InputSpec:
    """One model input: its shape without the batch, dtype, and (tokens) the vocabulary."""

    shape: tuple
    dtype: str = "float32"
    vocab: int = 0


@dataclass(frozen=True)
class LayerCall:
    """``layers.<cls>(**kwargs, name=...)`` called on the tensors ``inputs`` (indices into
    the model's tensor list: the inputs first, then each call's output)."""

    cls: str
    kwargs: dict
    inputs: tuple

    @property
    def is_merge(self) -> bool:
        return self.cls in MERGES


@dataclass(frozen=True)
class ModelSpec:
    """A random valid Keras model as data; ``repr`` is a program rebuilding it."""

    inputs: tuple
    calls: tuple
    outputs: tuple
    sequential: bool = False
    weight_seed: int = 0
    input_seed: int = 0
    input_scale: float = 1.0
    shapes: tuple = field(default=(), compare=False)

    # ---- building

    def layer_name(self, k: int) -> str:
        return f"l{k}_{self.calls[k].cls.lower()}"

    def build(self):
        """The ``keras.Model`` (a ``Sequential`` when ``sequential``), weights randomised."""
        import keras

        layer_cls = keras.layers
        made = [getattr(layer_cls, c.cls)(**c.kwargs, name=self.layer_name(k))
                for k, c in enumerate(self.calls)]
        if self.sequential:
            (inp,) = self.inputs
            model = keras.Sequential([keras.Input(inp.shape, dtype=inp.dtype, name="in0"),
                                      *made], name="fuzz")
        else:
            tensors = [keras.Input(s.shape, dtype=s.dtype, name=f"in{i}")
                       for i, s in enumerate(self.inputs)]
            for layer, call in zip(made, self.calls):
                args = [tensors[i] for i in call.inputs]
                tensors.append(layer(args if call.is_merge else args[0]))
            ins = tensors[:len(self.inputs)]
            outs = [tensors[i] for i in self.outputs]
            model = keras.Model(ins[0] if len(ins) == 1 else ins,
                                outs[0] if len(outs) == 1 else outs, name="fuzz")
        randomize(model, self.weight_seed)
        return model

    def make_inputs(self, batch: int = 4) -> list[np.ndarray]:
        """Seeded inputs: standard normal times ``input_scale``; tokens uniform ints."""
        rng = np.random.default_rng(self.input_seed)
        out = []
        for s in self.inputs:
            if s.dtype.startswith("int"):
                out.append(rng.integers(0, s.vocab, size=(batch, *s.shape)).astype(s.dtype))
            else:
                out.append((self.input_scale * rng.standard_normal((batch, *s.shape)))
                           .astype(s.dtype))
        return out

    def _repr_pretty_(self, printer, cycle):  # hypothesis prints examples with this
        printer.text(repr(self))

    def layer_classes(self) -> set:
        return {c.cls for c in self.calls}

    # ---- reproduction

    def __repr__(self) -> str:
        n_in = len(self.inputs)
        lines = ["import keras, numpy as np", "from keras import layers",
                 "from keras_models import randomize  # tests/fuzz/keras_models.py", ""]
        for i, s in enumerate(self.inputs):
            lines.append(f"t{i} = keras.Input({s.shape!r}, dtype={s.dtype!r}, name='in{i}')")
        for k, call in enumerate(self.calls):
            kw = "".join(f"{key}={value!r}, " for key, value in call.kwargs.items())
            args = ", ".join(f"t{i}" for i in call.inputs)
            if call.is_merge:
                args = f"[{args}]"
            shape = f"  # -> {self.shapes[n_in + k]}" if self.shapes else ""
            lines.append(f"t{n_in + k} = layers.{call.cls}({kw}name={self.layer_name(k)!r})"
                         f"({args}){shape}")
        ins = ", ".join(f"t{i}" for i in range(n_in))
        outs = ", ".join(f"t{i}" for i in self.outputs)
        ins = f"[{ins}]" if n_in > 1 else ins
        outs = f"[{outs}]" if len(self.outputs) > 1 else outs
        kind = "Sequential (built as below, then as keras.Sequential)" if self.sequential \
            else "Functional"
        lines += [f"model = keras.Model({ins}, {outs}, name='fuzz')  # {kind}",
                  f"randomize(model, {self.weight_seed})",
                  f"# inputs: ModelSpec.make_inputs(batch=4): seed {self.input_seed}, "
                  f"scale {self.input_scale}; token vocabularies "
                  f"{[s.vocab for s in self.inputs]}"]
        return "\n".join(lines)


def randomize(model, seed: int):
    """Give every weight of ``model`` seeded, non-trivial values: kernels ~ N(0, 1/fan_in),
    biases and betas ~ N(0, 0.3), gammas ~ U(0.5, 1.5), moving means ~ N(0, 0.5), moving
    variances ~ U(0.5, 2), PReLU slopes ~ U(-0.5, 0.5), embeddings ~ N(0, 1).  Returns
    ``model``."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        kind = type(layer).__name__
        for v in layer.weights:
            shape = tuple(int(d) for d in v.shape)
            name = v.name
            if name == "moving_variance":
                value = rng.uniform(0.5, 2.0, shape)
            elif name == "moving_mean":
                value = rng.normal(0.0, 0.5, shape)
            elif name == "gamma":
                value = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "bias"):
                value = rng.normal(0.0, 0.3, shape)
            elif name == "alpha":
                value = rng.uniform(-0.5, 0.5, shape)
            elif name == "embeddings":
                value = rng.normal(0.0, 1.0, shape)
            elif len(shape) >= 2:
                value = rng.normal(0.0, 1.0 / math.sqrt(_fan_in(kind, name, shape)), shape)
            else:
                continue  # e.g. Normalization's mean/variance: given to the constructor
            v.assign(value.astype("float32"))
    return model


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers and layer is not model:
            yield from _all_layers(layer)
        else:
            yield layer


def _fan_in(kind: str, name: str, shape) -> int:
    if name == "depthwise_kernel" or kind.startswith("Depthwise"):
        return max(1, math.prod(shape[:-2]))  # (*k, C, mult): one input channel each
    if "Transpose" in kind:
        return max(1, math.prod(shape[:-2]) * shape[-1])  # (*k, out, in)
    return max(1, math.prod(shape[:-1]))


# --------------------------------------------------------------------------- drawing

MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"}
_LAYERS_MODULE = None


def _layers():
    global _LAYERS_MODULE
    if _LAYERS_MODULE is None:
        import keras

        _LAYERS_MODULE = keras.layers
    return _LAYERS_MODULE


class _Draft:
    """The model under construction while drawing: tensors' shapes, calls, the current
    tensor; ``add`` proposes one layer call and keeps it only if Keras accepts it."""

    def __init__(self, draw):
        self.draw = draw
        self.inputs: list[InputSpec] = []
        self.shapes: list[tuple] = []
        self.calls: list[LayerCall] = []
        self.cur = 0
        self.params = 0
        self.used: set[int] = set()

    @property
    def shape(self) -> tuple:
        return self.shapes[self.cur]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def add_input(self, spec: InputSpec) -> int:
        self.inputs.append(spec)
        self.shapes.append(tuple(spec.shape))
        assert len(self.shapes) == len(self.inputs), "inputs come before every layer"
        return len(self.shapes) - 1

    def add(self, cls: str, kwargs: dict, inputs=None) -> int | None:
        """Add ``cls(**kwargs)`` on ``inputs`` (default: the current tensor) if Keras
        accepts it and the result stays small; make it current.  Returns its index."""
        inputs = tuple(inputs if inputs is not None else (self.cur,))
        in_shapes = [self.shapes[i] for i in inputs]
        state = random.getstate()  # Keras layers seed themselves from ``random``
        try:
            layer = getattr(_layers(), cls)(**kwargs)
            batched = [(None, *s) for s in in_shapes]
            out = layer.compute_output_shape(batched if cls in MERGES else batched[0])
        except Exception:  # Keras refuses this combination: not a valid model
            return None
        finally:
            random.setstate(state)
        out = tuple(out)[1:]
        if not out or _degenerate(cls, kwargs, in_shapes):
            return None
        if any(d is None or d < 1 for d in out) or math.prod(out) > MAX_ELEMENTS:
            return None
        params = _param_count(cls, kwargs, in_shapes, out)
        if self.params + params > MAX_PARAMS:
            return None
        self.params += params
        self.calls.append(LayerCall(cls, dict(kwargs), inputs))
        self.shapes.append(out)
        self.used.update(inputs)
        self.cur = len(self.shapes) - 1
        return self.cur

    # ---- helpers for families

    def ints(self, lo, hi):
        return self.draw(st.integers(lo, hi))

    def pick(self, options):
        return self.draw(st.sampled_from(list(options)))

    def coin(self, p_true: float = 0.5) -> bool:
        # integers are shrink-friendly: 0 shrinks towards "False"
        return self.draw(st.integers(0, 99)) < int(p_true * 100)

    def activation(self, p_none: float = 0.4):
        if self.coin(p_none):
            return None
        return self.pick(SAFE_ACTIVATIONS)


def _degenerate(cls, kwargs, in_shapes) -> bool:
    """Calls that make an exactly constant tensor (softmax over one value, layer-norm over
    one value): a later normalisation of such a constant divides float rounding noise by
    sqrt(epsilon), so runtimes disagree by far more than 1e-5 without any bug.  Also the
    calls TensorFlow's CPU kernels cannot run (depthwise with unequal strides)."""
    shape = in_shapes[0]
    act = kwargs.get("activation")
    if act in ("softmax", "log_softmax"):
        last = kwargs.get("units", kwargs.get("filters", shape[-1] if shape else 1))
        if cls.startswith(("Depthwise",)):
            last = shape[-1] * kwargs.get("depth_multiplier", 1)
        if last == 1:
            return True
    if cls == "Softmax" and shape[kwargs.get("axis", -1) - (kwargs.get("axis", -1) > 0)] == 1:
        return True
    if cls == "LayerNormalization":
        # Over 1 value the output is constant; over 2-3 values (a - b) / sqrt(var + eps)
        # amplifies float32 rounding ~30x near a == b: runtimes disagree beyond 1e-5.
        axes = kwargs["axis"] if isinstance(kwargs["axis"], list) else [kwargs["axis"]]
        if math.prod(shape[a - 1] if a > 0 else shape[a] for a in axes) < 4:
            return True
    if cls.startswith(("Depthwise", "Separable")) and len(set(kwargs.get("strides", (1,)))) > 1:
        return True  # "Current implementation only supports equal length strides"
    return False


def _param_count(cls, kwargs, in_shapes, out) -> int:
    """A rough weight count, to keep examples small (Dense after a big Flatten)."""
    c_in = in_shapes[0][-1] if in_shapes[0] else 1
    if cls == "Dense":
        return c_in * kwargs["units"]
    if cls.startswith(("Conv", "Separable", "Depthwise")):
        k = kwargs.get("kernel_size", (1,))
        return math.prod(k) * c_in * max(out[-1], 1)
    return 0


def _spatial_rank(d: _Draft) -> int:
    return d.rank - 1


def _tuple(d: _Draft, r: int, lo: int, hi: int, same_p: float = 0.7) -> tuple:
    if d.coin(same_p):
        v = d.ints(lo, hi)
        return (v,) * r
    return tuple(d.ints(lo, hi) for _ in range(r))


def _kernel(d: _Draft, r: int) -> tuple:
    limit = [min(3, n) for n in d.shape[:-1]]
    if d.coin(0.7):
        k = d.ints(1, min(limit))
        return (k,) * r
    return tuple(d.ints(1, lim) for lim in limit)


def _conv_geometry(d: _Draft, r: int, allow_causal: bool = False, allow_dilation=True):
    kernel = _kernel(d, r)
    paddings = ["valid", "same"] + (["causal"] if allow_causal and r == 1 else [])
    padding = d.pick(paddings)
    strides = _tuple(d, r, 1, 2)
    dil = (1,) * r
    if allow_dilation and all(s == 1 for s in strides) and d.coin(0.3):
        dil = _tuple(d, r, 1, 2)
    return kernel, strides, padding, dil


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


# ---- layer families (each draws one kind of layer or block for the current tensor)


def conv(d: _Draft):
    r = _spatial_rank(d)
    if r not in (1, 2, 3):
        return
    c = d.shape[-1]
    groups = d.pick(_divisors(c)) if d.coin(0.25) else 1
    filters = groups * d.ints(1, max(1, 6 // groups))
    kernel, strides, padding, dil = _conv_geometry(d, r, allow_causal=True)
    d.add(f"Conv{r}D", dict(filters=filters, kernel_size=kernel, strides=strides,
                            padding=padding, dilation_rate=dil, groups=groups,
                            activation=d.activation(), use_bias=d.coin(0.8)))


def depthwise(d: _Draft):
    r = _spatial_rank(d)
    if r not in (1, 2):
        return
    kernel, strides, padding, dil = _conv_geometry(d, r)
    d.add(f"DepthwiseConv{r}D", dict(kernel_size=kernel, strides=strides, padding=padding,
                                     dilation_rate=dil, depth_multiplier=d.ints(1, 2),
                                     activation=d.activation(), use_bias=d.coin(0.8)))


def separable(d: _Draft):
    r = _spatial_rank(d)
    if r not in (1, 2):
        return
    kernel, strides, padding, dil = _conv_geometry(d, r)
    d.add(f"SeparableConv{r}D", dict(filters=d.ints(1, 6), kernel_size=kernel,
                                     strides=strides, padding=padding, dilation_rate=dil,
                                     depth_multiplier=d.ints(1, 2),
                                     activation=d.activation(), use_bias=d.coin(0.8)))


def conv_transpose(d: _Draft):
    r = _spatial_rank(d)
    if r not in (1, 2, 3) or math.prod(d.shape[:-1]) > 144:
        return
    # TensorFlow's CPU kernels refuse dilated transposed convolutions: no dilation here.
    kernel = _tuple(d, r, 1, 3)
    strides = _tuple(d, r, 1, 2)
    padding = d.pick(["valid", "same"])
    output_padding = None
    if d.coin(0.3):
        output_padding = tuple(d.ints(0, s - 1) for s in strides)
        if padding == "same" and any(
                -(-((n - 1) * s + k + p - 2 * (k // 2)) // s) != n
                for n, s, k, p in zip(d.shape[:-1], strides, kernel, output_padding)):
            # Keras accepts this, TensorFlow does not: the output length it implies does not
            # map back to the input length ("Conv2DCustomBackpropInput: Size of out_backprop
            # doesn't match computed").
            return
    d.add(f"Conv{r}DTranspose", dict(filters=d.ints(1, 4), kernel_size=kernel,
                                     strides=strides, padding=padding,
                                     output_padding=output_padding,
                                     activation=d.activation(), use_bias=d.coin(0.8)))


def pool(d: _Draft):
    r = _spatial_rank(d)
    if r not in (1, 2, 3):
        return
    kind = d.pick(["Max", "Average"])
    size = _tuple(d, r, 1, 3)
    strides = None if d.coin(0.5) else _tuple(d, r, 1, 3)
    d.add(f"{kind}Pooling{r}D", dict(pool_size=size, strides=strides,
                                     padding=d.pick(["valid", "same"])))


def global_pool(d: _Draft):
    r = _spatial_rank(d)
    if r not in (1, 2, 3):
        return
    kind = d.pick(["Max", "Average"])
    d.add(f"Global{kind}Pooling{r}D", dict(keepdims=d.coin(0.3)))


def batchnorm(d: _Draft):
    if d.rank < 1:
        return
    axis = -1 if d.coin(0.7) else d.ints(1, d.rank)
    d.add("BatchNormalization", dict(axis=axis, epsilon=d.pick([1e-3, 1e-5, 0.1]),
                                     center=d.coin(0.8), scale=d.coin(0.8)))


def layernorm(d: _Draft):
    if d.rank < 1:
        return
    full = d.rank + 1  # Keras counts the batch axis
    start = d.ints(max(1, full - 3), full - 1)
    axis = -1 if start == full - 1 and d.coin(0.5) else list(range(start, full))
    # epsilon >= 1e-3 (Keras's default): with 1e-5, two nearly equal values normalise to
    # (a - b) / sqrt((a - b)^2 + eps), which turns float32 rounding of a - b into errors
    # of 5e-5 between runtimes that are all right.
    d.add("LayerNormalization", dict(axis=axis, epsilon=d.pick([1e-3, 0.1]),
                                     center=d.coin(0.8), scale=d.coin(0.8)))


def activation_layer(d: _Draft):
    kind = d.pick(["Activation", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU",
                   "Softmax"])
    if kind == "Activation":
        d.add("Activation", dict(activation=d.activation(p_none=0.0) if not d.coin(0.1)
                                 else "linear"))
    elif kind == "ReLU":
        d.add("ReLU", dict(max_value=d.pick([None, None, 6.0, 1.5]),
                           negative_slope=d.pick([0.0, 0.0, 0.1, 0.3]),
                           threshold=d.pick([0.0, 0.0, 0.5, -0.25])))
    elif kind == "LeakyReLU":
        d.add("LeakyReLU", dict(negative_slope=d.pick([0.3, 0.01, 0.2])))
    elif kind == "ELU":
        d.add("ELU", dict(alpha=d.pick([1.0, 0.5, 2.0])))
    elif kind == "PReLU":
        shared = None
        if d.rank >= 2 and d.coin(0.5):
            shared = list(range(1, d.rank))  # spatial axes share one slope per channel
        d.add("PReLU", dict(shared_axes=shared))
    else:
        axis = -1 if d.coin(0.6) else d.ints(1, d.rank)
        d.add("Softmax", dict(axis=axis))


def noop(d: _Draft):
    r = _spatial_rank(d)
    kinds = ["Dropout", "GaussianDropout", "AlphaDropout", "GaussianNoise", "Identity",
             "ActivityRegularization"]
    if r in (1, 2, 3):
        kinds += [f"SpatialDropout{r}D"] * 2
    kind = d.pick(kinds)
    if kind == "GaussianNoise":
        d.add(kind, dict(stddev=0.5))
    elif kind in ("Identity",):
        d.add(kind, {})
    elif kind == "ActivityRegularization":
        d.add(kind, dict(l1=0.01, l2=0.01))
    else:
        d.add(kind, dict(rate=d.pick([0.1, 0.5, 0.9])))


def dense(d: _Draft):
    d.add("Dense", dict(units=d.ints(1, 8), activation=d.activation(),
                        use_bias=d.coin(0.8)))


def flatten(d: _Draft):
    if d.rank >= 2:
        d.add("Flatten", {})


def reshape(d: _Draft):
    n = math.prod(d.shape)
    rank = d.ints(1, 3)
    dims = []
    rest = n
    for _ in range(rank - 1):
        f = d.pick(_divisors(rest))
        dims.append(f)
        rest //= f
    dims.append(rest)
    if d.coin(0.2) and len(dims) > 1:
        dims[d.ints(0, len(dims) - 1)] = -1  # let Keras infer one dim
    d.add("Reshape", dict(target_shape=tuple(dims)))


def permute(d: _Draft):
    if d.rank < 2:
        return
    perm = d.draw(st.permutations(list(range(1, d.rank + 1))))
    d.add("Permute", dict(dims=tuple(perm)))


def zero_padding(d: _Draft):
    r = _spatial_rank(d)
    if r not in (1, 2, 3):
        return
    pairs = tuple((d.ints(0, 2), d.ints(0, 2)) for _ in range(r))
    d.add(f"ZeroPadding{r}D", dict(padding=pairs[0] if r == 1 else pairs))


def cropping(d: _Draft):
    r = _spatial_rank(d)
    if r not in (1, 2, 3):
        return
    pairs = []
    for n in d.shape[:-1]:
        a = d.ints(0, min(2, n - 1))
        b = d.ints(0, min(2, n - 1 - a))
        pairs.append((a, b))
    d.add(f"Cropping{r}D", dict(cropping=pairs[0] if r == 1 else tuple(pairs)))


def upsampling(d: _Draft):
    r = _spatial_rank(d)
    if r not in (1, 2, 3):
        return
    size = _tuple(d, r, 1, 3)
    d.add(f"UpSampling{r}D", dict(size=size[0] if r == 1 else size))


def rescaling(d: _Draft):
    d.add("Rescaling", dict(scale=d.pick([0.5, 2.0, -1.0, 1 / 255]),
                            offset=d.pick([0.0, 0.0, 0.5, -1.0])))


def normalization(d: _Draft):
    c = d.shape[-1]
    rng = np.random.default_rng(d.ints(0, 2**16))
    mean = [round(float(v), 4) for v in rng.normal(0, 1, c)]
    var = [round(float(v), 4) for v in rng.uniform(0.25, 4.0, c)]
    d.add("Normalization", dict(axis=-1, mean=mean, variance=var))


# ---- functional blocks


def _same_shape_branch(d: _Draft, start: int) -> int | None:
    """1-3 shape-preserving layers on tensor ``start``; returns the branch's end."""
    d.cur = start
    c = d.shape[-1]
    r = _spatial_rank(d)
    for _ in range(d.ints(1, 3)):
        kind = d.pick(["dense", "act", "bn", "noop", "conv", "depthwise", "ln"])
        if kind == "dense":
            d.add("Dense", dict(units=c, activation=d.activation(), use_bias=d.coin(0.8)))
        elif kind == "act":
            activation_layer(d)
        elif kind == "bn":
            batchnorm(d)
        elif kind == "ln":
            layernorm(d)
        elif kind == "noop":
            noop(d)
        elif kind == "conv" and r in (1, 2, 3):
            k = _kernel(d, r)
            d.add(f"Conv{r}D", dict(filters=c, kernel_size=k, padding="same",
                                    activation=d.activation()))
        elif kind == "depthwise" and r in (1, 2):
            k = _kernel(d, r)
            d.add(f"DepthwiseConv{r}D", dict(kernel_size=k, padding="same",
                                             activation=d.activation()))
    if d.shapes[d.cur] != d.shapes[start]:
        return None
    return d.cur


def residual(d: _Draft):
    start = d.cur
    ends = [start]
    for _ in range(d.ints(1, 2)):
        end = _same_shape_branch(d, start)
        if end is not None and end not in ends:
            ends.append(end)
    if len(ends) < 2:
        d.cur = start
        return
    if len(ends) > 2 and d.coin(0.5):
        ends = ends[1:]
    merge = d.pick(["Add", "Multiply", "Average", "Maximum", "Minimum"]
                   + (["Subtract"] if len(ends) == 2 else []))
    if d.add(merge, {}, d.draw(st.permutations(ends))) is None:
        d.cur = start


def concat_branches(d: _Draft):
    """Two branches from the current tensor, concatenated on a random axis."""
    start = d.cur
    r = _spatial_rank(d)
    rank = d.rank
    branches = []
    for _ in range(2):
        d.cur = start
        choice = d.pick(["same", "same", "channels"])
        if choice == "channels":
            if r in (1, 2, 3) and d.coin(0.6):
                d.add(f"Conv{r}D", dict(filters=d.ints(1, 4), kernel_size=_kernel(d, r),
                                        padding="same", activation=d.activation()))
            else:
                d.add("Dense", dict(units=d.ints(1, 4), activation=d.activation()))
            branches.append(d.cur)
        else:
            end = _same_shape_branch(d, start)
            branches.append(start if end is None else end)
    if d.coin(0.25):
        branches.append(start)
    shapes = {d.shapes[b] for b in branches}
    axis = -1
    if len(shapes) == 1 and d.coin(0.5):
        axis = d.ints(1, rank)
    if d.add("Concatenate", dict(axis=axis), branches) is None:
        d.cur = start


def squeeze_excite(d: _Draft):
    r = _spatial_rank(d)
    if r not in (1, 2, 3):
        return
    start = d.cur
    c = d.shape[-1]
    keep = d.coin(0.5)
    if d.add(f"GlobalAveragePooling{r}D", dict(keepdims=keep)) is None:
        return
    d.add("Dense", dict(units=max(1, c // 2), activation="relu"))
    gate = d.add("Dense", dict(units=c, activation=d.pick(["sigmoid", "hard_sigmoid"])))
    if gate is None:
        d.cur = start
        return
    order = [start, gate] if d.coin(0.7) else [gate, start]
    if d.add(d.pick(["Multiply", "Multiply", "Add"]), {}, order) is None:
        d.cur = start


def merge_earlier(d: _Draft):
    """Merge the current tensor with an earlier one of a compatible shape (e.g. a second
    input, or a tensor before a shape-preserving stretch)."""
    cur = d.cur
    same = [i for i, s in enumerate(d.shapes) if s == d.shape and i != cur]
    if not same:
        return
    other = d.pick(same)
    merge = d.pick(["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
                    "Concatenate"])
    kwargs = dict(axis=-1) if merge == "Concatenate" else {}
    if d.add(merge, kwargs, d.draw(st.permutations([cur, other]))) is None:
        d.cur = cur


CHAIN_FAMILIES = {
    "conv": (conv, 6), "depthwise": (depthwise, 2), "separable": (separable, 2),
    "conv_transpose": (conv_transpose, 2), "pool": (pool, 3), "global_pool": (global_pool, 1),
    "batchnorm": (batchnorm, 3), "layernorm": (layernorm, 2),
    "activation": (activation_layer, 3), "noop": (noop, 2), "dense": (dense, 3),
    "flatten": (flatten, 1), "reshape": (reshape, 1), "permute": (permute, 1),
    "zero_padding": (zero_padding, 1), "cropping": (cropping, 2), "upsampling": (upsampling, 1),
    "rescaling": (rescaling, 1), "normalization": (normalization, 1),
}
GRAPH_FAMILIES = {"residual": (residual, 4), "concat": (concat_branches, 3),
                  "squeeze_excite": (squeeze_excite, 2), "merge_earlier": (merge_earlier, 2)}


def _weighted(families: dict) -> list[str]:
    return [name for name, (_, w) in families.items() for _ in range(w)]


def _first_input(d: _Draft, kind: str) -> None:
    if kind == "image":
        d.add_input(InputSpec((d.ints(3, 12), d.ints(3, 12), d.ints(1, 4))))
    elif kind == "sequence":
        d.add_input(InputSpec((d.ints(3, 16), d.ints(1, 4))))
    elif kind == "vector":
        d.add_input(InputSpec((d.ints(2, 16),)))
    elif kind == "volume":
        d.add_input(InputSpec((d.ints(2, 5), d.ints(2, 5), d.ints(2, 5), d.ints(1, 2))))
    else:  # tokens: an integer sequence through an Embedding
        d.add_input(InputSpec((d.ints(2, 10),), "int32", d.ints(2, 20)))


@st.composite
def model_specs(draw, *, kinds=INPUT_KINDS, functional: bool | None = None,
                max_steps: int = 8) -> ModelSpec:
    """A random valid Keras model (a :class:`ModelSpec`).

    ``kinds``: the input kinds to draw from (``image`` (H, W, C), ``sequence`` (L, C),
    ``vector`` (D,), ``volume`` (D, H, W, C), ``tokens`` (L,) ints with an Embedding);
    ``functional``: Functional (branches, merges, several inputs/outputs) or Sequential, or
    either when ``None``; ``max_steps``: layer families drawn (each adds 0-8 layers).
    """
    d = _Draft(draw)
    if functional is None:
        functional = draw(st.booleans())
    _first_input(d, draw(st.sampled_from([k for k in kinds for _ in range(KIND_WEIGHTS[k])])))
    families = dict(CHAIN_FAMILIES, **(GRAPH_FAMILIES if functional else {}))
    names = _weighted(families)
    if functional and d.coin(0.15):
        # A second input: the same shape as the first (merged later) or a vector.
        first = d.inputs[0]
        if first.dtype == "float32" and d.coin(0.5):
            d.add_input(InputSpec(first.shape))
        else:
            d.add_input(InputSpec((d.ints(2, 8),)))
    if d.inputs[0].dtype.startswith("int"):
        d.cur = 0
        d.add("Embedding", dict(input_dim=d.inputs[0].vocab, output_dim=d.ints(1, 6)))
    for _ in range(draw(st.integers(1, max_steps))):
        families[draw(st.sampled_from(names))][0](d)
    # A head: often Flatten/global pooling then a Dense classifier.
    if d.rank >= 2 and d.coin(0.4):
        if d.coin(0.5):
            flatten(d)
        else:
            global_pool(d)
    if d.coin(0.5):
        d.add("Dense", dict(units=d.ints(1, 10), activation=d.pick(
            ["softmax", "sigmoid", None, "linear", "relu", "log_softmax"])))
    outputs = [d.cur]
    if functional:
        # Inputs no layer reads get a small head of their own: a model with several outputs.
        for i in range(1, len(d.inputs)):
            if i not in d.used:
                d.cur = i
                if d.add("Dense", dict(units=d.ints(1, 4))) is None:
                    reject()  # Keras refuses a model with an unused input
                outputs.append(d.cur)
        if len(d.calls) > 2 and d.coin(0.15):
            extra = d.pick(range(len(d.inputs), len(d.shapes) - 1))
            if extra not in outputs:
                outputs.append(extra)
    if not d.calls:  # Keras refuses a model whose output is its input: one layer at least
        d.cur = 0
        d.add("Activation", dict(activation="relu"))
        outputs = [d.cur]
    weight_seed = draw(st.integers(0, 2**31 - 1))
    input_seed = draw(st.integers(0, 2**31 - 1))
    return ModelSpec(inputs=tuple(d.inputs), calls=tuple(d.calls), outputs=tuple(outputs),
                     sequential=not functional, weight_seed=weight_seed,
                     input_seed=input_seed, input_scale=draw(st.sampled_from([1.0, 0.5, 3.0])),
                     shapes=tuple(d.shapes))


# --------------------------------------------------------------------------- the known bugs

def tf_3d_same_shift(call: LayerCall, in_shape) -> list[int]:
    """Per spatial axis, how far TensorFlow's 3-D conv/pool kernels shift the first window
    for ``padding="same"``: they compute the leading pad as ``trunc(total / 2)`` *without*
    clamping a negative ``total = (out - 1) * stride + k_eff - n`` at zero (the 1-D/2-D
    kernels clamp), so a window smaller than its stride that ends short of the input starts
    ``-trunc(total / 2)`` elements in."""
    kw = call.kwargs
    kernel = kw.get("kernel_size", kw.get("pool_size"))
    strides = kw.get("strides") or kernel
    dil = kw.get("dilation_rate", (1,) * len(kernel))
    shifts = []
    for n, k, s, d in zip(in_shape[:-1], kernel, strides, dil):
        total = (-(-n // s) - 1) * s + (k - 1) * d + 1 - n
        shifts.append(-int(total / 2) if total < 0 else 0)
    return shifts


def known_bugs_of(spec: "ModelSpec", bugs: dict | None = None) -> list[KnownBug]:
    """The known bugs ``spec`` can trigger (of ``bugs``, default :func:`tolerated_bugs`)."""
    bugs = tolerated_bugs() if bugs is None else bugs
    return [b for b in bugs.values() if b.matches(spec)]


__all__ = ["ModelSpec", "LayerCall", "InputSpec", "model_specs", "randomize", "KNOWN_BUGS",
           "KnownBug", "tolerated_bugs", "known_bugs_of", "INPUT_KINDS", "ACTIVATION_NAMES"]
