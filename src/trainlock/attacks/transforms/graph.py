"""Find rescalable / mergeable chains of layers in any nn.Module (shared by the weight-space transforms).

A *chain* is a producer layer (nn.Linear or nn.Conv1d/2d/3d with groups=1), the ops its output
flows through, and the consumer layer (Linear or Conv) that reads the result, where every tensor
on the way has exactly one user (nothing else sees the intermediate values). Chains are found by
`torch.fx` symbolic tracing of the whole model; when a module cannot be traced (data-dependent
control flow, e.g. the built-in transformer's `tokenize`), its children are traced one by one, and
an untraceable nn.Sequential is scanned child by child. Chains that cross the boundary of an
untraceable module are not seen (conservative: a transform never acts on a pair it cannot prove).

Ops on a chain are classified as

* positively homogeneous (f(a x) = a f(x) for a > 0, channel-wise): ReLU, LeakyReLU, MaxPool,
  AvgPool / AdaptiveAvgPool / AdaptiveMaxPool, identity, Dropout (identity in eval), and one
  flatten (`flatten(1)`, `nn.Flatten()`, `view(B, -1)` / `reshape(B, -1)`) between a conv producer
  and a Linear consumer: conv output channel i then feeds `group = in_features / C` consecutive
  input columns of the Linear (channel-major, H'*W' each);
* an eval-mode BatchNorm directly after the producer (recorded as `chain.norm`): a per-channel
  affine map, so a channel can be rescaled through its weight and bias instead of the producer's;
* non-homogeneous elementwise activations (tanh, GELU, sigmoid, SiLU, ELU, ...): the chain is still
  reported, with `homogeneous=False` and `blocker` naming the op, so transforms can list the skip.

Anything else (residual adds, attention, reshapes that are not a flatten, branching) ends the walk.

Also here: `norm_pairs` (Linear/Conv feeding a BatchNorm/LayerNorm directly, nothing else reading
the layer's output) and small shared helpers (per-layer sigma_max, the recorded lock summary,
a probe input for checks, replacing a submodule by name).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LAYER = (nn.Linear, *CONV)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

_ELEMENTWISE_MODULES = (nn.ReLU, nn.LeakyReLU)
_POOL_MODULES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_BLOCKER_MODULES = (
    nn.Tanh,
    nn.GELU,
    nn.Sigmoid,
    nn.SiLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Softplus,
    nn.Mish,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.LogSigmoid,
    nn.Softsign,
    nn.Tanhshrink,
    nn.PReLU,
)
_RELU_FUNCS = {torch.relu, F.relu, torch.relu_, F.relu_}
_LEAKY_FUNCS = {F.leaky_relu, F.leaky_relu_}
_POOL_FUNCS = {
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    torch.max_pool1d,
    torch.max_pool2d,
    torch.avg_pool1d,
    torch.adaptive_avg_pool1d,
}
_IDENTITY_FUNCS = {F.dropout, torch.dropout}
_BLOCKER_FUNCS = {
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    F.gelu: "gelu",
    F.silu: "silu",
    F.elu: "elu",
    F.selu: "selu",
    F.softplus: "softplus",
    F.mish: "mish",
    F.relu6: "relu6",
    F.hardtanh: "hardtanh",
    F.hardswish: "hardswish",
}
_BLOCKER_METHODS = {"tanh", "sigmoid"}


@dataclass
class Chain:
    """producer -> [norm] -> ops -> consumer, every intermediate tensor read by the next op only."""

    producer_name: str
    producer: nn.Module  # nn.Linear or nn.ConvNd, groups == 1
    consumer_name: str
    consumer: nn.Module  # nn.Linear or nn.ConvNd, groups == 1
    ops: list[str] = field(default_factory=list)  # kinds on the way: "relu", "maxpool2d", "flatten", ...
    norm_name: str | None = None  # eval-mode BatchNorm right after the producer, if any
    norm: nn.Module | None = None
    homogeneous: bool = True  # every op is positively homogeneous (and channel-wise)
    blocker: str | None = None  # the first non-homogeneous op when homogeneous is False
    group: int = 1  # consumer input columns per producer output unit (H'*W' across a flatten)

    @property
    def activation(self) -> str:
        """The activation kind: the blocker, else the first activation on the way, else "identity"."""
        if self.blocker:
            return self.blocker
        acts = [o for o in self.ops if o in ("relu", "leaky_relu")]
        return acts[0] if acts else "identity"

    @property
    def linear_only(self) -> bool:
        """Nothing nonlinear on the way (only identity / dropout), no norm, no flatten."""
        return self.norm is None and self.homogeneous and all(o in ("identity", "dropout") for o in self.ops)

    def describe(self) -> str:
        mid = [self.norm_name] if self.norm_name else []
        return " -> ".join([self.producer_name, *mid, *self.ops, self.consumer_name])


@dataclass
class NormPair:
    """A Linear/Conv whose output goes only into a BatchNorm / LayerNorm."""

    layer_name: str
    layer: nn.Module
    norm_name: str
    norm: nn.Module


# ---------------------------------------------------------------------------------------------- tracing


def _trace(module: nn.Module) -> fx.Graph | None:
    try:
        return fx.Tracer().trace(module)
    except Exception:  # any tracing failure means: fall back
        return None


def _units(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module, fx.Graph | None]]:
    """(qualified name, module, graph or None) for every maximal traceable piece of `model`.

    A None graph marks an untraceable nn.Sequential, to be scanned child by child.
    """
    graph = _trace(model)
    if graph is not None:
        yield prefix, model, graph
        return
    if isinstance(model, nn.Sequential):
        yield prefix, model, None
    for name, child in model.named_children():
        if isinstance(model, nn.Sequential) and _is_leaf(child):
            continue  # already covered by the scan
        yield from _units(child, f"{prefix}{name}.")


def _is_leaf(m: nn.Module) -> bool:
    return type(m).__module__.startswith("torch.nn") and not isinstance(m, nn.Sequential)


def _qual(prefix: str, name: str) -> str:
    return f"{prefix}{name}" if prefix else name


# ---------------------------------------------------------------------------------------------- op kinds


def _module_kind(m: nn.Module) -> tuple[str, str]:
    """(category, kind) for a leaf module: category in homog / pool / identity / flatten / blocker / stop."""
    if isinstance(m, nn.ReLU):
        return "homog", "relu"
    if isinstance(m, nn.LeakyReLU):
        return "homog", "leaky_relu"
    if isinstance(m, _POOL_MODULES):
        return "pool", type(m).__name__.lower()
    if isinstance(m, _IDENTITY_MODULES):
        return "identity", "identity" if isinstance(m, nn.Identity) else "dropout"
    if isinstance(m, nn.Flatten):
        return ("flatten", "flatten") if (m.start_dim == 1 and m.end_dim == -1) else ("stop", "flatten")
    if isinstance(m, _BLOCKER_MODULES):
        return "blocker", type(m).__name__.lower()
    return "stop", type(m).__name__.lower()


def _flatten_args_ok(node: fx.Node) -> bool:
    args = list(node.args[1:])
    start = node.kwargs.get("start_dim", args[0] if args else 0)
    end = node.kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
    return start == 1 and end == -1


def _node_kind(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, str]:
    if node.op == "call_module":
        return _module_kind(modules[node.target])
    if node.op == "call_function":
        t = node.target
        if t in _RELU_FUNCS:
            return "homog", "relu"
        if t in _LEAKY_FUNCS:
            return "homog", "leaky_relu"
        if t in _POOL_FUNCS:
            return "pool", getattr(t, "__name__", "pool")
        if t in _IDENTITY_FUNCS:
            return "identity", "dropout"
        if t is torch.flatten:
            return ("flatten", "flatten") if _flatten_args_ok(node) else ("stop", "flatten")
        if t in _BLOCKER_FUNCS:
            return "blocker", _BLOCKER_FUNCS[t]
        return "stop", getattr(t, "__name__", str(t))
    if node.op == "call_method":
        t = node.target
        if t in ("relu", "relu_"):
            return "homog", "relu"
        if t == "flatten":
            return ("flatten", "flatten") if _flatten_args_ok(node) else ("stop", "flatten")
        if t in ("view", "reshape"):
            shape = node.args[1:]
            if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
                shape = tuple(shape[0])
            return ("flatten", t) if (len(shape) == 2 and shape[1] == -1) else ("stop", t)
        if t == "contiguous":
            return "identity", "identity"
        if t in _BLOCKER_METHODS:
            return "blocker", t
        return "stop", t
    return "stop", node.op


def _only_input_is(node: fx.Node, src: fx.Node) -> bool:
    """`node` reads `src` as its first argument and no other fx node as a tensor input."""
    if not node.args or node.args[0] is not src:
        return False
    others = [a for a in list(node.args[1:]) + list(node.kwargs.values()) if isinstance(a, fx.Node)]
    # view(B, -1) passes size proxies, which are not tensors on the chain: allow getattr/getitem/size nodes
    meta = (getattr, operator.getitem, "size", "dim")
    return all(a.op in ("call_function", "call_method") and a.target in meta for a in others)


def _data_users(node: fx.Node) -> list[fx.Node]:
    """Users of `node` that read its values (not just its shape, dtype or device)."""
    out = []
    for u in node.users:
        if u.op == "call_method" and u.target in ("size", "dim"):
            continue
        if (
            u.op == "call_function"
            and u.target is getattr
            and len(u.args) > 1
            and u.args[1] in ("shape", "ndim", "dtype", "device")
        ):
            continue
        out.append(u)
    return out


def _has_state(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


def _usable_layer(m: nn.Module) -> bool:
    return isinstance(m, LAYER) and getattr(m, "groups", 1) == 1


def _bn_ok(m: nn.Module) -> bool:
    return isinstance(m, BATCHNORM) and m.affine and m.track_running_stats and m.running_var is not None


# ---------------------------------------------------------------------------------------------- walks


def _walk_graph(prefix: str, root: nn.Module, graph: fx.Graph) -> tuple[list[Chain], list[NormPair]]:
    modules = dict(root.named_modules())
    calls: dict[str, int] = {}
    for n in graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    # modules whose parameters the forward also reads directly (e.g. `self.fc.bias` in an add):
    # changing them would change that other use too
    exposed = {n.target.rsplit(".", 1)[0] if "." in n.target else "" for n in graph.nodes if n.op == "get_attr"}
    chains: list[Chain] = []
    norms: list[NormPair] = []
    for p in graph.nodes:
        if p.op != "call_module" or not _usable_layer(modules[p.target]) or calls[p.target] != 1:
            continue
        if p.target in exposed:
            continue
        producer = modules[p.target]
        users = _data_users(p)
        if len(users) != 1:
            continue
        first = users[0]
        if (
            first.op == "call_module"
            and calls[first.target] == 1
            and _only_input_is(first, p)
            and first.target not in exposed
            and isinstance(modules[first.target], (*BATCHNORM, nn.LayerNorm))
        ):
            norm = modules[first.target]
            norms.append(NormPair(_qual(prefix, p.target), producer, _qual(prefix, first.target), norm))
        chain = _follow(prefix, p, producer, modules, calls, exposed)
        if chain is not None:
            chains.append(chain)
    return chains, norms


def _follow(prefix: str, p: fx.Node, producer: nn.Module, modules: dict, calls: dict, exposed: set) -> Chain | None:
    is_conv = isinstance(producer, CONV)
    ops: list[str] = []
    norm_name = norm = blocker = None
    flattened = False
    cur = p
    while True:
        users = _data_users(cur)
        if len(users) != 1:
            return None
        nxt = users[0]
        if not _only_input_is(nxt, cur):
            return None
        mod = modules.get(nxt.target) if nxt.op == "call_module" else None
        if mod is not None and calls.get(nxt.target, 0) != 1 and _has_state(mod):
            return None  # a layer with parameters / buffers called twice: changing it affects the other call
        if mod is not None and nxt.target in exposed:
            return None
        if mod is not None and _usable_layer(mod):
            return _make_chain(prefix, p.target, producer, nxt.target, mod, ops, norm_name, norm, blocker, flattened)
        if mod is not None and isinstance(mod, BATCHNORM):
            if cur is not p or not _bn_ok(mod):
                return None
            norm_name, norm = nxt.target, mod
            cur = nxt
            continue
        cat, kind = _node_kind(nxt, modules)
        if cat == "stop":
            return None
        if cat == "pool" and (not is_conv or flattened):
            return None
        if cat == "flatten":
            if flattened:
                return None
            flattened = True
        if cat == "blocker" and blocker is None:
            blocker = kind
        ops.append(kind)
        cur = nxt


def _make_chain(prefix, pname, producer, cname, consumer, ops, norm_name, norm, blocker, flattened) -> Chain | None:
    out_units = producer.out_features if isinstance(producer, nn.Linear) else producer.out_channels
    if isinstance(consumer, nn.Linear):
        if isinstance(producer, CONV) and not flattened:
            return None  # a Linear on a conv map acts on the last spatial axis, not on channels
        if consumer.in_features % out_units:
            return None
        group = consumer.in_features // out_units
        if isinstance(producer, nn.Linear) and group != 1:
            return None
    else:
        if flattened or isinstance(producer, nn.Linear) or consumer.in_channels != out_units:
            return None
        group = 1
    return Chain(
        _qual(prefix, pname),
        producer,
        _qual(prefix, cname),
        consumer,
        list(ops),
        _qual(prefix, norm_name) if norm_name else None,
        norm,
        blocker is None,
        blocker,
        group,
    )


def _scan_sequential(prefix: str, seq: nn.Sequential) -> tuple[list[Chain], list[NormPair]]:
    """Fallback without fx: consecutive children of an nn.Sequential."""
    items = list(seq.named_children())
    chains: list[Chain] = []
    norms: list[NormPair] = []
    for i, (pname, producer) in enumerate(items):
        if not _usable_layer(producer):
            continue
        if i + 1 < len(items) and isinstance(items[i + 1][1], (*BATCHNORM, nn.LayerNorm)):
            norms.append(NormPair(_qual(prefix, pname), producer, _qual(prefix, items[i + 1][0]), items[i + 1][1]))
        ops: list[str] = []
        norm_name = norm = blocker = None
        flattened = False
        for j in range(i + 1, len(items)):
            name, mod = items[j]
            if _usable_layer(mod):
                chain = _make_chain(prefix, pname, producer, name, mod, ops, norm_name, norm, blocker, flattened)
                if chain is not None:
                    chains.append(chain)
                break
            if isinstance(mod, BATCHNORM):
                if j != i + 1 or not _bn_ok(mod):
                    break
                norm_name, norm = name, mod
                continue
            cat, kind = _module_kind(mod)
            if cat == "stop" or (cat == "pool" and (not isinstance(producer, CONV) or flattened)):
                break
            if cat == "flatten":
                if flattened:
                    break
                flattened = True
            if cat == "blocker" and blocker is None:
                blocker = kind
            ops.append(kind)
    return chains, norms


def _shared_params(model: nn.Module) -> set[int]:
    """ids of modules owning a parameter that is also registered elsewhere (weight tying)."""
    owners: dict[int, list[nn.Module]] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners.setdefault(id(p), []).append(m)
    return {id(m) for ms in owners.values() if len(ms) > 1 for m in ms}


def analyze(model: nn.Module) -> tuple[list[Chain], list[NormPair]]:
    """All chains and norm pairs of `model` (module order), excluding weight-tied layers."""
    chains: list[Chain] = []
    norms: list[NormPair] = []
    for prefix, mod, graph in _units(model):
        c, n = _walk_graph(prefix, mod, graph) if graph is not None else _scan_sequential(prefix, mod)
        chains += c
        norms += n
    tied = _shared_params(model)
    chains = [c for c in chains if not {id(c.producer), id(c.consumer), id(c.norm)} & tied]
    norms = [n for n in norms if not {id(n.layer), id(n.norm)} & tied]
    return chains, norms


def find_chains(model: nn.Module) -> list[Chain]:
    """Every producer -> ops -> consumer chain, homogeneous or not (see `Chain.homogeneous`)."""
    return analyze(model)[0]


def linear_pairs(model: nn.Module, include_norm: bool = False) -> list[tuple[nn.Module, str, nn.Module]]:
    """(producer, activation kind, consumer) for every positively homogeneous chain.

    Chains passing through a BatchNorm are left out unless `include_norm` (the rescaling then goes
    through the norm's affine weight and bias, see `Chain.norm`).
    """
    return [
        (c.producer, c.activation, c.consumer)
        for c in find_chains(model)
        if c.homogeneous and (include_norm or c.norm is None)
    ]


def norm_pairs(model: nn.Module) -> list[NormPair]:
    """Linear/Conv layers whose output goes only into a BatchNorm or LayerNorm."""
    return analyze(model)[1]


# ---------------------------------------------------------------------------------------------- helpers


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The (out, in*k...) matrix view of a Linear / Conv weight (a view, shares storage)."""
    w = module.weight
    return w.reshape(w.shape[0], -1)


@torch.no_grad()
def sigma_max_by_layer(model: nn.Module) -> dict[str, float]:
    """Largest singular value of every Linear / Conv weight (reshaped (out, in*kh*kw)), by parameter name."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, LAYER) and getattr(mod, "weight", None) is not None:
            w = mod.weight.detach().double()
            out[f"{name}.weight" if name else "weight"] = float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), 2))
    return out


def sigma_stats(before: dict[str, float], after: dict[str, float]) -> dict:
    """Per-layer sigma_max before/after plus the maxima over layers."""
    names = list(dict.fromkeys([*before, *after]))
    return {
        "sigma_max": {n: {"before": before.get(n), "after": after.get(n)} for n in names},
        "max_sigma_before": max(before.values()) if before else None,
        "max_sigma_after": max(after.values()) if after else None,
    }


def lock_meta(ctx) -> dict | None:
    """The recorded lock summary the context carries (a model directory's meta["lock"]), None without one."""
    meta = getattr(ctx, "lock_meta", None) if ctx is not None else None
    return meta if isinstance(meta, dict) else None


def probe_input(model: nn.Module, ctx, n: int = 4) -> torch.Tensor | None:
    """A small input batch for checks: ctx.sample, else random inputs of `model.input_shape`."""
    sample = getattr(ctx, "sample", None) if ctx is not None else None
    if sample is not None:
        return sample[:n]
    shape = getattr(model, "input_shape", None)
    if shape is None:
        return None
    p = next(model.parameters(), None)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    return x.to(p.device, p.dtype) if p is not None else x


def get_parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, leaf = name.split(".")
    parent = model
    for part in path:
        parent = getattr(parent, part)
    return parent, leaf


def set_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Replace the submodule at dotted `name`; returns the old one."""
    parent, leaf = get_parent(model, name)
    old = getattr(parent, leaf)
    setattr(parent, leaf, new)
    return old
