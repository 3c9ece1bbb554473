"""Parameter, Module and Sequential: the conventions every layer follows.

The contract of a layer (see ``DESIGN.md``)::

    y  = layer.forward(x)     # keeps what backward needs
    dx = layer.backward(dy)   # returns dL/dx and SETS (never accumulates) every param.grad

Calling ``backward`` twice after one ``forward`` gives the same result. ``train()`` and
``eval()`` switch modes recursively; only dropout, BatchNorm statistics and the spectral power
iteration care.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from specnorm_np.backend import get_array_module, to_device, to_numpy

__all__ = ["Parameter", "Module", "Sequential"]


class Parameter:
    """A trainable array with its gradient.

    Parameters
    ----------
    data : ndarray
        The value, any shape.
    name : str
        Short name within its layer (``"weight"``, ``"bias"``, ``"gamma"``, ...).
    regularize : bool
        True for the W matrices that weight decay and the spectral regularizer act on (Linear
        and conv weights); False for biases and BatchNorm scale/shift, as in the paper.

    Attributes
    ----------
    grad : ndarray or None
        dL/d(data), same shape as ``data``; set by the owning layer's ``backward``.
    state : dict
        Per-parameter state of optimizers and regularizers (e.g. a momentum buffer). It moves
        with the parameter in :meth:`Module.to`.
    """

    def __init__(self, data: Any, name: str = "", regularize: bool = False) -> None:
        self.data = data
        self.grad: Any = None
        self.name = name
        self.regularize = regularize
        self.state: dict[str, Any] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        kind = "weight" if self.regularize else "param"
        return f"Parameter({self.name!r}, shape={self.shape}, dtype={self.data.dtype}, {kind})"


class Module:
    """Base class of every layer and container.

    Subclasses assign :class:`Parameter` and :class:`Module` attributes in ``__init__``; they
    are found automatically (in assignment order) by :meth:`named_parameters` and
    :meth:`children`. Buffers (non-trainable state saved in ``state_dict``, such as BatchNorm's
    running statistics) are declared with :meth:`register_buffer`.
    """

    def __init__(self) -> None:
        self.training = True
        self._buffer_names: list[str] = []
        self._cache: Any = None
        self.label = type(self).__name__

    # ---- the layer contract -----------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        raise NotImplementedError

    def backward(self, dy: Any) -> Any:
        raise NotImplementedError

    def backward_weights(self, dy: Any) -> None:
        """Set every parameter's ``.grad`` as :meth:`backward` does, but return nothing.

        For a training step that does not need dL/dx (no adversarial example, no sensitivity
        measurement), layers may then skip the work that only dL/dx needs: Linear and Conv2d
        skip their input-gradient product, and :class:`Sequential` does not even run the
        parameter-free layers in front of its first layer with parameters (PyTorch does the same
        for an input that does not require a gradient). The parameter gradients are the same
        as :meth:`backward`'s. This default simply calls :meth:`backward` and drops dL/dx.
        """
        self.backward(dy)

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def _require_cache(self) -> Any:
        """Return what forward stored, or raise a clear error when there is none."""
        if self._cache is None:
            raise RuntimeError(
                f"{self.label}: backward() called before forward(); run forward on a batch "
                "first (backward needs the values forward keeps)"
            )
        return self._cache

    # ---- structure ----------------------------------------------------------------------------
    def children(self) -> Iterator[tuple[str, Module]]:
        """Yield ``(name, submodule)`` for direct submodules, in assignment order."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def modules(self) -> Iterator[Module]:
        """Yield this module and every submodule, depth first."""
        yield self
        for _, child in self.children():
            yield from child.modules()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Iterate over ``(qualified_name, Parameter)``: own parameters first, then children's."""
        found: list[tuple[str, Parameter]] = []
        self._collect_parameters(prefix, found)
        return iter(found)

    def _collect_parameters(self, prefix: str, found: list[tuple[str, Parameter]]) -> None:
        # (one list for the whole tree instead of nested generators: this runs in every
        # regularizer step, and a chain of ``yield from`` costs a resumption per level)
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                found.append((prefix + name, value))
        for name, child in self.children():
            if type(child).named_parameters is Module.named_parameters:
                child._collect_parameters(prefix + name + ".", found)
            else:  # a submodule with a rule of its own
                found.extend(child.named_parameters(prefix + name + "."))

    def parameters(self) -> list[Parameter]:
        """All parameters, in a deterministic order."""
        return [p for _, p in self.named_parameters()]

    def register_buffer(self, name: str, value: Any) -> None:
        """Declare a non-trainable array attribute that ``state_dict`` saves."""
        setattr(self, name, value)
        if name not in self._buffer_names:
            self._buffer_names.append(name)

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for name in self._buffer_names:
            yield prefix + name, getattr(self, name)
        for name, child in self.children():
            yield from child.named_buffers(prefix + name + ".")

    # ---- modes ----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=True``) or evaluation mode, recursively. Returns self."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Host (NumPy) copies of every parameter and buffer, by qualified name."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for name, p in self.named_parameters():
            state[name] = to_numpy(p.data).copy()
        for name, b in self.named_buffers():
            state[name] = to_numpy(b).copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load values saved by :meth:`state_dict` onto this model's device and dtypes.

        Raises ``KeyError`` for missing or unexpected names and ``ValueError`` for a shape
        mismatch, naming the entry.
        """
        params = dict(self.named_parameters())
        buffers = {name: None for name, _ in self.named_buffers()}
        expected = set(params) | set(buffers)
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise KeyError(
                f"{self.label}.load_state_dict: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        for name, p in params.items():
            p.data = self._converted(name, state[name], p.data)
        for m_prefix, m in self._prefixed_modules():
            for b in m._buffer_names:
                current = getattr(m, b)
                setattr(m, b, self._converted(m_prefix + b, state[m_prefix + b], current))

    def _prefixed_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self.children():
            yield from child._prefixed_modules(prefix + name + ".")

    def _converted(self, name: str, value: Any, like: Any) -> Any:
        if tuple(value.shape) != tuple(like.shape):
            raise ValueError(
                f"{self.label}.load_state_dict: {name!r} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(like.shape)}"
            )
        xp = get_array_module(like)
        if xp is np:
            return np.array(to_numpy(value), dtype=like.dtype, copy=True)
        return xp.asarray(to_numpy(value).astype(like.dtype))

    # ---- devices and dtypes ---------------------------------------------------------------------
    def to(self, device: str, *, module: ModuleType | None = None) -> Module:
        """Move parameters, gradients, optimizer state and buffers to ``"cpu"`` or ``"gpu"``.

        ``module`` picks the device array module explicitly (the tests use the strict backend);
        by default ``"gpu"`` is CuPy. Returns self.
        """

        if device not in ("cpu", "gpu"):
            raise ValueError(f"{self.label}.to: device must be 'cpu' or 'gpu', got {device!r}")

        def move(a: Any) -> Any:
            if a is None or isinstance(a, (int, float, str)):
                return a
            return to_device(a, device, module=module)

        for p in self.parameters():
            p.data, p.grad = move(p.data), move(p.grad)
            p.state = {k: move(v) for k, v in p.state.items()}
        for m in self.modules():
            for b in m._buffer_names:
                setattr(m, b, move(getattr(m, b)))
            m._cache = None
            m._reset_workspace()
        return self

    def astype(self, dtype: Any) -> Module:
        """Cast parameters, gradients, floating buffers and floating optimizer / regularizer
        state (``Parameter.state``) to ``dtype`` (e.g. float64 for gradient checks). Returns self.
        """

        def cast(a: Any) -> Any:
            if getattr(a, "dtype", None) is not None and a.dtype.kind == "f":
                return a.astype(dtype)
            return a

        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None if p.grad is None else p.grad.astype(dtype)
            p.state = {k: cast(v) for k, v in p.state.items()}
        for m in self.modules():
            for b in m._buffer_names:
                setattr(m, b, cast(getattr(m, b)))
            m._cache = None
            m._reset_workspace()
        return self

    def _reset_workspace(self) -> None:
        """Drop reusable scratch buffers (layers that keep some override this)."""

    # ---- printing -----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        kids = list(self.children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not kids:
            return head + ")"
        body = "\n".join(f"  ({n}): " + repr(c).replace("\n", "\n  ") for n, c in kids)
        return head + "\n" + body + "\n)"


class Sequential(Module):
    """Apply layers in order; backward runs them in reverse.

    ``Sequential(Linear(4, 8), ReLU(), Linear(8, 2))``; children are named ``"0"``, ``"1"``, ...
    so parameters are ``"0.weight"``, ``"0.bias"``, ``"2.weight"``, ...
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential: argument {i} is {type(layer).__name__}, expected a Module"
                )
            layer.label = f"{type(layer).__name__} (layer {i})"
        self.layers = list(layers)

    def children(self) -> Iterator[tuple[str, Module]]:
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: Any) -> Any:
        """Chain rule: dL/dx = J_1ᵀ ··· J_Lᵀ dL/dy, applied layer by layer in reverse."""
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def backward_weights(self, dy: Any) -> None:
        """Parameter gradients only: the chain rule stops at the first layer with parameters.

        Layers after it run their full ``backward`` (their dL/dx is the next layer's dL/dy);
        that layer runs ``backward_weights``; layers in front of it (e.g. a leading Flatten)
        are not run at all, since nothing they would compute is needed.
        """
        first = next((i for i, layer in enumerate(self.layers) if layer.parameters()), None)
        if first is None:
            return  # no parameters: nothing to compute
        for layer in reversed(self.layers[first + 1:]):
            dy = layer.backward(dy)
        self.layers[first].backward_weights(dy)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)
