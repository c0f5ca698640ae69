"""Your own model as a vglab model: Equinox modules, Flax models (nnx and linen) and plain
(init_fn, apply_fn) pairs.

    import vglab
    model = vglab.nn.wrap(my_equinox_module)          # or an nnx.Module, or (init_fn, apply_fn)
    model = vglab.nn.wrap(make_module, key=True)      # a factory of the key: the model's own init per seed

Build the model with `vglab.nn.activation("tanh")` where it applies its nonlinearity and
vglab can rescale it (g(z) = alpha*phi(z/alpha), the member's alpha) and measure its layer
factors (phi'(z), saturation): the activation records z as the layer's pre-activation
while vglab applies the model. Without it, vglab still measures every gradient and weight
norm per layer; the report says which instruments need pre-activations. A plain
`apply_fn(params, x, alpha=...)` that takes `alpha` itself is rescaled too.

Neither Equinox nor Flax is imported here unless the object to wrap comes from it.
"""

from __future__ import annotations

import contextlib
import inspect
import sys

import jax

from vglab.nn.model import Model, ModelError, apply_scope, kernel_fans, named_preactivations, out_in_fans

FAN_LAYOUTS = {"in_out": kernel_fans, "out_in": out_in_fans}


def _takes(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


class FunctionModel(Model):
    """A model from `init_fn(key) -> params` and `apply_fn(params, x) -> logits` (or
    `apply_fn(params, x, alpha=...)`; one that also takes `capture` returns
    `(logits, {layer: z})` when it is True, as vglab's own networks do).

    `fans`: "in_out" (weights shaped (..., in, out): JAX, Flax, Keras) or "out_in"
    ((out, in, ...): Equinox, PyTorch), for the fan-scaled init laws. `per_example`: apply_fn
    maps one example and vglab vmaps it over the batch (Equinox's convention).
    `activation`: the vglab activation name for the layer factors (found by itself when the
    model uses `vglab.nn.activation`: per layer, the one that recorded the layer's z, so
    a model may mix them)."""

    def __init__(self, init_fn, apply_fn, *, name: str = "model", activation: str | None = None,
                 in_shape=None, layer_order=None, fans: str = "in_out", per_example: bool = False):
        if not callable(init_fn) or not callable(apply_fn):
            raise ModelError("a model is a pair of functions (init_fn(key) -> params, apply_fn(params, x) -> logits)")
        if fans not in FAN_LAYOUTS:
            raise ModelError(f"fans must be one of {list(FAN_LAYOUTS)}, got {fans!r}")
        self.init_fn, self.apply_fn = init_fn, apply_fn
        self.name, self.in_shape = name, None if in_shape is None else tuple(in_shape)
        self.layer_order = None if layer_order is None else tuple(layer_order)
        self.per_example = per_example
        self._fans = FAN_LAYOUTS[fans]
        self.weight_layout = fans
        self._takes_alpha = _takes(apply_fn, "alpha")
        self._takes_capture = _takes(apply_fn, "capture")
        self._activation = activation
        self._scoped: set | None = None  # vglab activations seen when the forward pass was traced
        self._preact_acts = None  # the activation of each captured pre-activation (dict or list), last traced

    # --- the interface
    def init(self, key):
        return self.init_fn(key)

    def fans(self, name, param, shape):
        return self._fans(tuple(shape))

    @property
    def activation(self) -> str | None:
        if self._activation is not None:
            return self._activation
        if self._scoped and len(self._scoped) == 1:
            return next(iter(self._scoped))
        return None

    @property
    def activations_used(self) -> frozenset:
        """The vglab activations the forward pass applied (known once it was traced)."""
        return frozenset(self._scoped or ())

    def layer_activations(self, names) -> dict[str, str]:
        """Each layer's activation: the `activation` given, else the one that recorded the
        layer's pre-activation when the forward pass was traced with capture (by name, or
        in call order like the pre-activations), else the only one the model used."""
        if self._activation is not None:
            return {n: self._activation for n in names}
        found = named_preactivations(names, self._preact_acts) if self._preact_acts else {}
        acts = {n: found.get(n) or self.activation for n in names}
        return {n: a for n, a in acts.items() if a}

    @property
    def accepts_alpha(self) -> bool:
        """Known once the forward pass was traced (the layout does that first)."""
        return self._takes_alpha or bool(self._scoped)

    def apply(self, params, x, *, alpha=1.0, capture: bool = False):
        def run(xs):
            with apply_scope(alpha, capture) as scope:
                out = self._call(params, xs, alpha, capture)
            self._scoped = (self._scoped or set()) | scope.activations
            if capture and self._takes_capture:
                self._preact_acts = dict(scope.named_activations)
                return out  # (logits, preacts) from the function itself
            if capture:
                preacts = scope.preacts()  # raises, saying what to do, for a z recorded inside a vmap/scan
                self._preact_acts = scope.preact_activations()
                return out, preacts
            return out

        return jax.vmap(run)(x) if self.per_example else run(x)

    def _call(self, params, x, alpha, capture):
        kw = {"alpha": alpha} if self._takes_alpha else {}
        if capture and self._takes_capture:
            kw["capture"] = True
        return self.apply_fn(params, x, **kw)

    def __repr__(self):
        return f"<vglab model {self.name}>"


# ------------------------------------------------------------------ Equinox
def equinox(module_or_factory, *, key: bool = False, name: str | None = None, per_example: bool = True,
            **kw) -> FunctionModel:
    """An Equinox module as a vglab model. Pass the module itself (its parameters are the
    model's own init for every seed), or with `key=True` a factory `f(key) -> module`
    (a fresh draw per seed). Equinox layers map one example, so vglab vmaps over the
    batch (`per_example=False` if yours takes batches); weights are (out, in)."""
    import equinox as eqx

    build = module_or_factory if key else (lambda _k: module_or_factory)
    template = build(jax.random.key(0))
    if not isinstance(template, eqx.Module):
        raise ModelError(f"expected an equinox.Module, got {type(template).__name__}")
    params, static = eqx.partition(template, eqx.is_inexact_array)

    def init_fn(k):
        return eqx.partition(build(k), eqx.is_inexact_array)[0]

    def apply_fn(p, x):
        return eqx.combine(p, static)(x)

    return FunctionModel(init_fn, apply_fn, name=name or type(template).__name__, fans="out_in",
                         per_example=per_example, **kw)


# ------------------------------------------------------------------ Flax
def flax_nnx(module_or_factory, *, key: bool = False, name: str | None = None, **kw) -> FunctionModel:
    """A Flax nnx module as a vglab model (its `nnx.Param`s are trained; other state is
    kept as it is). With `key=True`, `module_or_factory(rngs)` builds a fresh one per seed."""
    from flax import nnx

    build = (lambda k: module_or_factory(nnx.Rngs(k))) if key else (lambda _k: module_or_factory)
    template = build(jax.random.key(0))
    if not isinstance(template, nnx.Module):
        raise ModelError(f"expected a flax.nnx.Module, got {type(template).__name__}")
    graphdef, _, rest = nnx.split(template, nnx.Param, ...)

    def init_fn(k):
        return nnx.split(build(k), nnx.Param, ...)[1]

    def apply_fn(p, x):
        return nnx.merge(graphdef, p, rest)(x)

    return FunctionModel(init_fn, apply_fn, name=name or type(template).__name__, **kw)


def flax_linen(module, in_shape, *, name: str | None = None, **kw) -> FunctionModel:
    """A Flax linen module as a vglab model: `module.init(key, x)['params']` is its own init
    (for an example shaped `in_shape`), `module.apply({'params': p}, x)` its forward pass."""
    import jax.numpy as jnp
    from flax import linen

    if not isinstance(module, linen.Module):
        raise ModelError(f"expected a flax.linen.Module, got {type(module).__name__}")
    example = jnp.zeros((1,) + tuple(in_shape), jnp.float32)

    def init_fn(k):
        return module.init(k, example)["params"]

    def apply_fn(p, x):
        return module.apply({"params": p}, x)

    return FunctionModel(init_fn, apply_fn, name=name or type(module).__name__, in_shape=in_shape, **kw)


# ------------------------------------------------------------------ one entry point
def _is(obj, module: str, attr: str) -> bool:
    mod = sys.modules.get(module)
    cls = getattr(mod, attr, None) if mod is not None else None
    return cls is not None and isinstance(obj, cls)


def wrap(obj, *, in_shape=None, **kw) -> Model:
    """Any supported model as a vglab `Model`: a vglab model (as is), an Equinox module, a
    Flax nnx or linen module, or an `(init_fn, apply_fn)` pair."""
    if isinstance(obj, Model):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2 and all(callable(f) for f in obj):
        return FunctionModel(*obj, in_shape=in_shape, **kw)
    if _is(obj, "equinox", "Module"):
        return equinox(obj, **kw)
    if _is(obj, "flax.nnx", "Module"):
        return flax_nnx(obj, **kw)
    if _is(obj, "flax.linen", "Module"):
        if in_shape is None:
            raise ModelError("a Flax linen module needs the example shape to initialize (in_shape)")
        return flax_linen(obj, in_shape, **kw)
    raise ModelError(f"cannot use a {type(obj).__module__}.{type(obj).__name__} as a model: give a vglab model, "
                     "an Equinox module, a Flax nnx or linen module, or a pair (init_fn, apply_fn)")


# ------------------------------------------------------------------ factories named in specs
def load_factory(ref: str, base_dir: str | None = None):
    """The callable named by `ref`: "package.module:factory" (imported; the current folder
    and `base_dir` are searched too) or "path/to/file.py:factory" (relative to `base_dir`)."""
    import importlib
    import importlib.util
    import os
    from pathlib import Path

    target, sep, attr = str(ref).rpartition(":")
    if not sep or not target or not attr:
        raise ModelError(f"model {ref!r}: write 'package.module:factory' or 'path/to/file.py:factory'")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = Path(base_dir or os.getcwd()) / path
        if not path.is_file():
            raise ModelError(f"model {ref!r}: no file {path}")
        name = f"vglab_user_model_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(name)
        if str(path.resolve().parent) not in sys.path:  # it imports modules beside it, as a script would
            sys.path.append(str(path.resolve().parent))
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[name]
                raise ModelError(f"model {ref!r}: importing {path} failed: {type(e).__name__}: {e}") from None
    else:
        for folder in (os.getcwd(), base_dir):
            if folder and folder not in sys.path:
                sys.path.append(folder)
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise ModelError(f"model {ref!r}: cannot import {target!r} ({type(e).__name__}: {e}); check the module "
                             "name, or give the file's path ('path/to/file.py:factory')") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"model {ref!r}: {target} has no callable {attr!r}")
    return factory


def build_from_factory(ref: str, model_args: dict, *, in_shape, n_classes: int, activation: str | None = None,
                       base_dir: str | None = None) -> Model:
    """Call the factory `ref` with `model_args` (and `in_shape`, `n_classes`, `activation`
    when it takes them) and wrap what it returns (`wrap`)."""
    factory = load_factory(ref, base_dir)
    kwargs = dict(model_args)
    for k, v in (("in_shape", tuple(in_shape)), ("n_classes", n_classes), ("activation", activation)):
        if v is not None and k not in kwargs and _takes(factory, k):
            kwargs[k] = v
    try:
        obj = factory(**kwargs)
    except TypeError as e:
        raise ModelError(f"model {ref!r}: calling it with {sorted(kwargs)} failed ({e}); model_args must be the "
                         "factory's keyword arguments") from None
    model = wrap(obj, in_shape=in_shape)
    if not isinstance(model, Model):
        raise ModelError(f"model {ref!r} returned a {type(obj).__name__}, not a model")
    with contextlib.suppress(AttributeError):  # for `check_activation` (a frozen model dataclass too)
        object.__setattr__(model, "activation_passed", "activation" in kwargs)
    return model


def check_activation(model: Model, wanted: str | None, ref: str) -> None:
    """A spec's `activation` for your model must be what the model computes: vglab passes it
    to a factory that takes `activation`, and otherwise only checks it. Call after the
    forward pass was traced (`model.layout(x)`), when the model's own activation is known
    (`vglab.nn.activation` in it, or its declaration). A factory that takes the argument
    but ignores it is caught too."""
    if wanted is None:
        return
    own = model.activation
    if own == wanted:
        return
    passed = getattr(model, "activation_passed", False)
    if own is not None:
        how = (f"its factory was given activation={wanted!r} and built one with {own!r}" if passed else
               "its factory takes no `activation` argument")
        raise ModelError(f"model {ref!r} computes {own!r} (its vglab.nn.activation), but the spec says activation = "
                         f"{wanted!r} ({how}); remove activation from the spec to train and label the model's own, "
                         f"or build the model with vglab.nn.activation({wanted!r})")
    if not passed:
        raise ModelError(f"the spec's activation = {wanted!r} has no effect on model {ref!r}: its factory takes no "
                         "`activation` argument and the model does not use vglab.nn.activation, so vglab can neither "
                         "set nor check it; remove activation from the spec (the runs table then says 'unknown'), "
                         f"or build the model's nonlinearity with vglab.nn.activation({wanted!r})")
