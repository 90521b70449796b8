"""Node classification as a federated task: each client holds one disjoint part of a citation graph.

The federated side (``fedticket.fl``) resolves this class from the config (``task: graph``) by
its dotted path, so neither side imports the other; it is duck-typed to the interface of
``fedticket.fl.task.VisionTask`` and reads only plain attributes of the run config
(``cfg.graph.*``, ``cfg.seed``, ``cfg.num_clients``).

Every method of the federated side trains ``model(x[idx])`` against ``y[idx]`` and evaluates
``model(x[a:b])``: here ``x`` is a :class:`NodeView` (one client's sparsified subgraph + the
positions of the nodes asked for), and the model, a :class:`NodeClassifier`, runs the GNN over
the whole subgraph and returns the logits of those nodes. So the supermask methods stay
model-agnostic; with ``train.batch_size`` at least a client's node count a local step is one
full-batch GCN step, as in the graph side.

What SynFlow sees (server, data-free): the all-ones input of shape ``(1, in_dim)`` on a graph
with no edges, i.e. one node whose normalised adjacency is the identity, the GNN's MLP path.
For a GCN this loses nothing: with non-negative weights and an all-ones input the ReLUs pass
everything, and SynFlow's objective ``1ᵀ Â|W2|Â|W1| 1`` factors into ``(1ᵀ Â Â 1) · 1ᵀ|W2||W1|1``,
a positive constant of the graph times the MLP's, so every weight's score (and the kept set) is
the same on any graph, and the server needs no client's edges. For GIN the readout mixes two
paths with different graph factors, so the identity graph is a choice: the graph-free one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from fedticket.errors import UserError
from graph.data import RAW_URL, canonical_name, load_planetoid, raw_files
from graph.models import build_model as build_gnn
from graph.ops import AdjacencyCache
from graph.partition import partition_graph
from graph.transforms import teddy_sparsify_edges

#: (feature dimension, classes) of each dataset: the server builds the model without the data
DIMS = {"cora": (1433, 7), "citeseer": (3703, 6)}


@dataclass(frozen=True, eq=False)
class Graph:
    """A client's (TEDDY-sparsified) subgraph: features and local edges."""

    x: Tensor
    edge_index: Tensor


class NodeView:
    """Some nodes of one graph: indexing it (``view[idx]``, ``view[a:b]``) selects among them."""

    def __init__(self, graph: Graph, nodes: Tensor):
        self.graph = graph
        self.nodes = nodes

    def __getitem__(self, key) -> NodeView:
        return NodeView(self.graph, self.nodes[key])

    def __len__(self) -> int:
        return int(self.nodes.numel())


class NodeClassifier(nn.Module):
    """A GNN that answers for the nodes of a :class:`NodeView` (or, given a plain tensor, treats
    its rows as isolated nodes: the MLP path SynFlow scores, see the module docstring)."""

    def __init__(self, gnn: nn.Module):
        super().__init__()
        self.gnn = gnn

    def __deepcopy__(self, memo):
        # the GNNs cache a sparse CSR adjacency, which torch cannot deepcopy: copy without it
        # (a copy rebuilds its own on its first forward)
        caches = [(m, m._adj) for m in self.modules() if isinstance(getattr(m, "_adj", None),
                                                                    AdjacencyCache)]
        for m, _ in caches:
            m._adj = AdjacencyCache()
        try:
            new = self.__class__.__new__(self.__class__)
            memo[id(self)] = new
            for k, v in self.__dict__.items():
                new.__dict__[k] = copy.deepcopy(v, memo)
            return new
        finally:
            for m, cache in caches:
                m._adj = cache

    def forward(self, inp) -> Tensor:
        if isinstance(inp, NodeView):
            return self.gnn(inp.graph.x, inp.graph.edge_index)[inp.nodes]
        return self.gnn(inp, torch.empty(2, 0, dtype=torch.long, device=inp.device))


def unit_scale_rows(x: Tensor) -> Tensor:
    """Each node's features scaled to mean square 1 (a per-node, client-local step).

    A supermask cannot rescale the frozen weights, so the logits' scale is set by the input's:
    Planetoid's row-normalised bag of words (entries ~1/18 on Cora) would leave the Kaiming-scaled
    network near-uniform softmax outputs that no mask can sharpen. Unit-scale rows give the same
    activation scale as the standardised images of the vision task.
    """
    norm = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x * (x.shape[1] ** 0.5 / norm)


def _dims(cfg) -> tuple[int, int]:
    return DIMS[cfg.graph.dataset]


@lru_cache(maxsize=4)
def _clients(dataset: str, root: str, partition: str, k: int, seed: int, train_fraction: float,
             val_fraction: float, sparsity: float):
    """Every client's part, sparsified by TEDDY on its own subgraph (cached per process)."""
    data = load_planetoid(dataset, root, normalize_features=False)
    data.x = unit_scale_rows(data.x)
    if tuple(DIMS[dataset]) != (data.num_features, int(data.y.max()) + 1):
        raise ValueError(f"{dataset}: expected (features, classes) {DIMS[dataset]}")
    out = []
    for sub in partition_graph(data, partition, k, seed, train_fraction, val_fraction):
        ei = sub.edge_index
        if sparsity > 0 and ei.shape[1] > 0:
            # the client ranks only its own edges: TEDDY needs degrees, which it has locally
            ei, _ = teddy_sparsify_edges(ei, sparsity, sub.num_nodes)
        out.append((sub, Graph(sub.x.contiguous(), ei.contiguous())))
    return tuple(out)


def _key(cfg, root: str) -> tuple:
    g = cfg.graph
    return (g.dataset, str(root), g.partition, int(cfg.num_clients), int(cfg.seed),
            float(g.train_fraction), float(g.val_fraction), float(g.sparsity))


def clients(cfg, root: str):
    """``(Subgraph, Graph)`` of every client: its part and its TEDDY-sparsified graph."""
    return _clients(*_key(cfg, root))


class GraphTask:
    """``task: graph``: node classification on disjoint client subgraphs (see module docstring)."""

    name = "graph"
    cacheable = False   # the client data is a graph view, not tensors a node caches on disk

    def model_key(self, cfg) -> tuple:
        g = cfg.graph
        return ("graph", g.model, g.dataset, int(g.hidden), float(g.dropout))

    def build_model(self, cfg, seed: int | None = None) -> nn.Module:
        if seed is not None:
            torch.manual_seed(int(seed))
        in_dim, classes = _dims(cfg)
        g = cfg.graph
        return NodeClassifier(build_gnn(g.model, in_dim, classes, hidden=g.hidden,
                                        dropout=g.dropout))

    def input_shape(self, cfg) -> tuple[int, ...]:
        return (_dims(cfg)[0],)

    def dataset_label(self, cfg) -> str:
        return f"{cfg.graph.dataset}-{cfg.graph.partition}"

    def resolve_root(self, cfg, flag=None) -> str:
        """The data root (``--data-root`` > ``data.root`` > ``$FEDTICKET_DATA`` > ``./data``),
        checked before round 1: missing files are downloaded only with ``data.download`` (as
        the vision task does), and a missing, failed or altered file is one UserError naming
        the folder and the fix."""
        from fedticket.datasets import resolve_data_root

        root = resolve_data_root(flag, cfg.data.root).expanduser().resolve()
        name = canonical_name(cfg.graph.dataset)
        raw_dir = root / "Planetoid" / name / "raw"
        missing = [f for f in raw_files(name) if not (raw_dir / f).is_file()]
        if missing and not getattr(cfg.data, "download", True):
            raise UserError(
                f"{name} data not found under {root} (data.download is false): {len(missing)} "
                f"of its files are missing from {raw_dir} ({', '.join(missing)}). Place them "
                f"there (from {RAW_URL}/), set data.download=true to fetch them, or point "
                "--data-root / data.root / $FEDTICKET_DATA at a folder that holds "
                f"Planetoid/{name}/raw/.")
        load_planetoid(cfg.graph.dataset, root)  # downloads what is missing; UserError offline
        return str(root)

    def client_data(self, cfg, root: str, partition_id: int):
        """(train view, train labels, val view, val labels) of one client."""
        sub, graph = self._client(cfg, root, partition_id)
        return (NodeView(graph, sub.train), sub.y[sub.train],
                NodeView(graph, sub.val), sub.y[sub.val])

    def client_test_data(self, cfg, root: str, partition_id: int):
        """(test view, test labels) of one client: its own test nodes in its own subgraph, the
        per-client accuracy of a global model (the global test set is their union)."""
        sub, graph = self._client(cfg, root, partition_id)
        return NodeView(graph, sub.test), sub.y[sub.test]

    def _client(self, cfg, root: str, partition_id: int):
        parts = _clients(*_key(cfg, root))
        if not 0 <= partition_id < len(parts):
            raise ValueError(f"partition id {partition_id} out of range for {len(parts)} clients")
        return parts[partition_id]

    def test_data(self, cfg, root: str):
        """Every client's test nodes, each inside its own subgraph: the disjoint union of the
        clients' sparsified subgraphs (one block-diagonal graph), restricted to test nodes."""
        xs, eis, nodes, ys, off = [], [], [], [], 0
        for sub, graph in _clients(*_key(cfg, root)):
            xs.append(graph.x)
            eis.append(graph.edge_index + off)
            nodes.append(sub.test + off)
            ys.append(sub.y[sub.test])
            off += sub.num_nodes
        union = Graph(torch.cat(xs), torch.cat(eis, dim=1))
        return NodeView(union, torch.cat(nodes)), torch.cat(ys)
