"""Watching a model call itself: which layer receives which raw input feature.

`intercept` routes the ``call`` of chosen layers through a handler for the length of a
``with`` block (on the instance, never the class); `Recording` builds the call tree of one
model call and finds the outermost *embedders* (`Site`: a layer call that maps one raw
feature to a float tensor); `Counting` finds the same calls again in later model calls,
to capture their outputs or replace them.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Mapping, Sequence

import numpy as np

from tfrs_diag._keras import tf


class Stop(Exception):
    """Raised by a wrapped tower once both towers' inputs are known (stops compute_loss early)."""


def is_layer(obj) -> bool:
    return isinstance(obj, tf.keras.layers.Layer)


def layers_of(*roots) -> list:
    """Every layer under ``roots`` (roots included), each once, metrics excluded."""
    out, seen = [], set()
    for root in roots:
        if not is_layer(root):
            continue
        for layer in root._flatten_layers(include_self=True, recursive=True):
            if id(layer) in seen or isinstance(layer, tf.keras.metrics.Metric):
                continue
            seen.add(id(layer))
            out.append(layer)
    return out


@contextlib.contextmanager
def intercept(layers: Sequence, handler: Callable):
    """Temporarily routes ``layer.call`` of each layer through ``handler(layer, call, args, kwargs)``.

    The wrapper is set on the instance (Keras looks ``self.call`` up on every
    ``__call__``) and removed on exit, whatever happens; the class is never touched.
    """
    installed = []
    try:
        for layer in layers:
            had = "call" in layer.__dict__
            previous = layer.__dict__.get("call")
            original = layer.call

            def wrapper(*args, _layer=layer, _original=original, **kwargs):
                fn = _original
                if not tf.executing_eagerly() and getattr(_layer, "_should_use_autograph", lambda: False)():
                    fn = tf.__internal__.autograph.tf_convert(_original,
                                                              tf.__internal__.autograph.control_status_ctx())
                return handler(_layer, fn, args, kwargs)

            object.__setattr__(layer, "call", tf.autograph.experimental.do_not_convert(wrapper))
            installed.append((layer, had, previous))
        yield
    finally:
        for layer, had, previous in reversed(installed):
            if had:
                object.__setattr__(layer, "call", previous)
            else:
                object.__delattr__(layer, "call")


def first_input(args, kwargs):
    return args[0] if args else kwargs.get("inputs")


def _other_tensors(args, kwargs) -> bool:
    rest = [args[1:], {k: v for k, v in kwargs.items() if k not in ("inputs", "training", "mask")}]
    return any(isinstance(x, (tf.Tensor, tf.Variable)) for x in tf.nest.flatten(rest))


def same_values(a: tf.Tensor, b: tf.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(tf.reduce_all(tf.equal(a, b)))


def match_feature(x, raw: Mapping[str, tf.Tensor], ids: Mapping[int, str]) -> str | None:
    """The raw feature ``x`` is (by identity, else by value when exactly one feature matches)."""
    if not isinstance(x, tf.Tensor):
        return None
    name = ids.get(id(x))
    if name is not None:
        return name
    matches = [n for n, t in raw.items() if same_values(t, x)]
    return matches[0] if len(matches) == 1 else None


class _Node:
    __slots__ = ("layer", "source", "children", "out")

    def __init__(self, layer, source):
        self.layer, self.source, self.children, self.out = layer, source, [], None


class Recording:
    """The call tree of one model call, with which raw feature reaches which layer."""

    def __init__(self, raw: Mapping[str, tf.Tensor]):
        self.raw = dict(raw)
        self.ids = {id(t): n for n, t in raw.items()}
        self.keep: list = []  # derived tensors stay alive so their ids stay unique
        self.root = _Node(None, None)
        self.stack = [self.root]

    def handler(self, layer, call, args, kwargs):
        source = None if _other_tensors(args, kwargs) else match_feature(first_input(args, kwargs), self.raw,
                                                                           self.ids)
        node = _Node(layer, source)
        self.stack[-1].children.append(node)
        self.stack.append(node)
        try:
            out = call(*args, **kwargs)
        finally:
            self.stack.pop()
        if source is not None and isinstance(out, tf.Tensor):
            if out.dtype.is_floating:
                node.out = out  # embedder of `source`
            else:  # ids, tokens, buckets: still one feature's
                self.ids[id(out)] = source
                self.keep.append(out)
        return out

    def sites(self) -> list["Site"]:
        """Outermost embedders in call order, each with its layer's call count (pre-order)."""
        counts: dict[int, int] = {}
        sites: list[Site] = []

        def walk(node):
            for child in node.children:
                k = counts.get(id(child.layer), 0)
                counts[id(child.layer)] = k + 1
                if child.out is not None:
                    if child.out.shape.rank is None or child.out.shape.rank < 1:
                        continue
                    sites.append(Site(child.layer, k, child.source, tuple(child.out.shape[1:]), child.out.dtype))
                else:
                    walk(child)

        walk(self.root)
        return sites


class Site:
    """One embedder call: ``layer``'s ``occurrence``-th call in a model call maps ``feature``
    to an output of shape ``[n, *shape]`` and ``dtype``."""

    def __init__(self, layer, occurrence: int, feature: str, shape: tuple, dtype):
        self.layer, self.occurrence, self.feature, self.shape, self.dtype = layer, occurrence, feature, shape, dtype
        self.width = int(np.prod(shape)) if shape else 1

    @property
    def key(self) -> tuple[int, int]:
        return id(self.layer), self.occurrence

    def __repr__(self) -> str:
        return f"Site({self.layer.name!r}#{self.occurrence} <- {self.feature!r}, {list(self.shape)})"


class Counting:
    """Counts calls of the embedder layers outside embedder calls, as `Recording.sites` does."""

    def __init__(self, sites: Sequence[Site], replacements=None):
        self.by_key = {s.key: s for s in sites}
        self.replacements = replacements
        self.counts: dict[int, int] = {}
        self.depth = 0
        self.captured: dict[tuple[int, int], tf.Tensor] = {}

    def handler(self, layer, call, args, kwargs):
        if self.depth:
            return call(*args, **kwargs)
        k = self.counts.get(id(layer), 0)
        self.counts[id(layer)] = k + 1
        site = self.by_key.get((id(layer), k))
        if site is None:
            return call(*args, **kwargs)
        if self.replacements is not None:
            return self.replacements[site.key]
        self.depth += 1
        try:
            out = call(*args, **kwargs)
        finally:
            self.depth -= 1
        self.captured[site.key] = out
        return out


def call_fn(model) -> Callable:
    if is_layer(model):
        return lambda feats: model(feats, training=False)
    return lambda feats: model(feats)


def root_layers(obj) -> list:
    if is_layer(obj):
        return [obj]
    owner = getattr(obj, "__self__", None)  # a bound method of a model
    return [owner] if is_layer(owner) else []
