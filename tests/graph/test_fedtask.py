"""The federated graph task: disjoint client parts, per-client TEDDY, the node-view model, SynFlow's input."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch_geometric.utils import to_undirected

from graph.fedtask import Graph, GraphTask, NodeClassifier, NodeView
from graph.models import build_model
from graph.partition import induced_subgraph, node_parts, partition_graph, split_nodes

from .conftest import copy_planetoid


def _ring_of_cliques(c: int = 4, size: int = 6):
    """``c`` cliques joined in a ring by one edge each: obvious communities."""
    edges = []
    for k in range(c):
        base = k * size
        edges += [(base + i, base + j) for i in range(size) for j in range(i + 1, size)]
        edges.append((base, ((k + 1) % c) * size + 1))
    ei = to_undirected(torch.tensor(edges).T)
    return ei, c * size


@pytest.mark.parametrize("kind", ["metis", "louvain"])
def test_parts_cover_every_node_once_and_are_seeded(kind):
    ei, n = _ring_of_cliques()
    parts = node_parts(kind, ei, n, 4, seed=3)
    assert parts.shape == (n,) and set(parts.tolist()) == {0, 1, 2, 3}
    assert (parts == node_parts(kind, ei, n, 4, seed=3)).all()
    # both find the cliques: every clique's nodes land in one part
    for k in range(4):
        assert len(set(parts[k * 6:(k + 1) * 6].tolist())) == 1


def test_induced_subgraph_drops_edges_across_parts():
    ei, n = _ring_of_cliques()
    nodes = torch.arange(6)   # one clique
    sub = induced_subgraph(ei, nodes, n)
    assert sub.shape[1] == 6 * 5  # the clique's 15 undirected edges, both directions; ring edge gone
    assert int(sub.max()) < 6


def test_split_is_disjoint_and_complete():
    tr, va, te = split_nodes(50, 0.2, 0.2, seed=0, part=1)
    allp = torch.cat([tr, va, te]).sort().values
    assert torch.equal(allp, torch.arange(50)) and (len(tr), len(va)) == (10, 10)
    assert not torch.equal(tr, split_nodes(50, 0.2, 0.2, seed=0, part=2)[0])


def test_node_view_indexes_its_nodes_and_model_answers_for_them():
    torch.manual_seed(0)
    ei, n = _ring_of_cliques()
    g = Graph(torch.randn(n, 5), ei)
    model = NodeClassifier(build_model("gcn", 5, 3, hidden=8, dropout=0.0)).eval()
    view = NodeView(g, torch.tensor([3, 7, 11, 20]))
    full = model.gnn(g.x, g.edge_index)
    assert torch.allclose(model(view), full[view.nodes])
    assert torch.allclose(model(view[1:3]), full[torch.tensor([7, 11])])
    assert len(view[torch.tensor([0, 2])]) == 2


def test_gcn_synflow_scores_do_not_depend_on_the_graph():
    """The module docstring's claim: with |W| and an all-ones input, a GCN's synaptic-flow
    objective is the MLP path's times a positive graph constant, so the scores are proportional."""
    torch.manual_seed(0)
    ei, n = _ring_of_cliques()
    gcn = build_model("gcn", 5, 3, hidden=8, dropout=0.0).double()
    with torch.no_grad():
        for p in gcn.parameters():
            p.abs_()

    def scores(x, edge_index):
        gcn.zero_grad()
        gcn(x, edge_index).sum().backward()
        return torch.cat([(p.grad * p).flatten() for p in gcn.parameters()])

    on_graph = scores(torch.ones(n, 5, dtype=torch.float64), ei)
    mlp = scores(torch.ones(1, 5, dtype=torch.float64), torch.empty(2, 0, dtype=torch.long))
    ratio = on_graph / mlp
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-9)


@pytest.fixture(scope="module")
def cora_root(tmp_path_factory):
    return copy_planetoid("Cora", tmp_path_factory.mktemp("data"))


def _cfg(root, **graph):
    g = dict(dataset="cora", partition="metis", model="gcn", hidden=16, dropout=0.5,
             sparsity=0.3, train_fraction=0.2, val_fraction=0.2)
    g.update(graph)
    return SimpleNamespace(graph=SimpleNamespace(**g), seed=0, num_clients=5,
                           data=SimpleNamespace(root=str(root)))


def test_cora_clients_are_disjoint_and_teddy_runs_on_each(cora_root):
    from graph.data import load_planetoid

    data = load_planetoid("cora", cora_root)
    subs = partition_graph(data, "metis", 5, 0, 0.2, 0.2)
    nodes = torch.cat([s.nodes for s in subs])
    assert nodes.numel() == data.num_nodes and nodes.unique().numel() == data.num_nodes
    task = GraphTask()
    cfg = _cfg(cora_root)
    for pid, sub in enumerate(subs):
        x, y, xv, yv = task.client_data(cfg, str(cora_root), pid)
        assert x.graph.x.shape[0] == sub.num_nodes and len(x) == len(y) == len(sub.train)
        full = sub.edge_index.shape[1] // 2
        kept = x.graph.edge_index.shape[1] // 2
        assert kept == full - round(0.3 * full) or abs(kept - 0.7 * full) <= 1
        assert torch.equal(y, sub.y[sub.train]) and torch.equal(yv, sub.y[sub.val])
    xt, yt = task.test_data(cfg, str(cora_root))
    assert len(yt) == sum(len(s.test) for s in subs)
    assert xt.graph.x.shape[0] == data.num_nodes


def test_model_key_and_shapes(cora_root):
    task = GraphTask()
    cfg = _cfg(cora_root, model="gin")
    m = task.build_model(cfg, seed=1)
    assert task.input_shape(cfg) == (1433,)
    out = m(torch.ones(1, 1433))   # SynFlow's input: one isolated node
    assert out.shape == (1, 7)
    assert torch.equal(task.build_model(cfg, seed=1).gnn.conv1.weight, m.gnn.conv1.weight)


def test_features_are_scaled_to_unit_mean_square_per_node():
    from graph.fedtask import unit_scale_rows

    x = torch.rand(10, 40) * (torch.rand(10, 40) < 0.1)
    x[0, 0] = 1.0  # no empty row
    s = unit_scale_rows(x)
    rows = s.pow(2).mean(dim=1)
    nonzero = x.abs().sum(1) > 0
    assert torch.allclose(rows[nonzero], torch.ones(int(nonzero.sum())))
    assert torch.equal(s == 0, x == 0)   # a per-node rescale: the sparsity pattern stays


def _root_cfg(root, download):
    return SimpleNamespace(graph=SimpleNamespace(dataset="cora"),
                           data=SimpleNamespace(root=str(root), download=download))


def _no_network(monkeypatch, calls=None):
    from urllib.error import URLError

    import torch_geometric.data

    def refuse(url, *a, **k):
        if calls is not None:
            calls.append(url)
        raise URLError("network unreachable (test)")

    monkeypatch.setattr(torch_geometric.data, "download_url", refuse)


def test_data_download_false_names_the_root_and_never_downloads(tmp_path, monkeypatch):
    from fedticket.errors import UserError

    calls = []
    _no_network(monkeypatch, calls)
    with pytest.raises(UserError, match="data.download is false") as e:
        GraphTask().resolve_root(_root_cfg(tmp_path / "empty", download=False))
    assert str(tmp_path / "empty") in str(e.value) and "Planetoid/Cora/raw" in str(e.value)
    assert calls == []


def test_offline_download_is_one_error_naming_the_raw_folder(tmp_path, monkeypatch):
    from fedticket.errors import UserError

    calls = []
    _no_network(monkeypatch, calls)
    with pytest.raises(UserError, match="could not be downloaded") as e:
        GraphTask().resolve_root(_root_cfg(tmp_path / "empty", download=True))
    assert str(tmp_path / "empty" / "Planetoid" / "Cora" / "raw") in str(e.value)
    assert len(calls) == 1   # it tried (download=true), then stopped at the first failure


def test_present_files_need_no_download(cora_root, monkeypatch):
    _no_network(monkeypatch)
    assert GraphTask().resolve_root(_root_cfg(cora_root, download=False)) == \
        str(cora_root.resolve())


def test_client_test_views_partition_the_global_test_set(cora_root):
    task = GraphTask()
    cfg = _cfg(cora_root)
    xt, yt = task.test_data(cfg, str(cora_root))
    model = NodeClassifier(build_model("gcn", 1433, 7, hidden=8, dropout=0.0)).eval()
    with torch.no_grad():
        pred = model(xt).argmax(1)
        per = [task.client_test_data(cfg, str(cora_root), p) for p in range(cfg.num_clients)]
        own = torch.cat([model(x).argmax(1) for x, _ in per])
    # the union graph is block-diagonal: a client's nodes see the same neighbours either way
    assert torch.equal(torch.cat([y for _, y in per]), yt) and torch.equal(own, pred)


def _benchmark():
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("fl_graph_benchmark",
                                                  repo / "simulations/fl_graph_benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_method_set_overrides_one_method_only():
    """simulations/fl_graph_benchmark.py --method-set: a baseline keeps its own setting while the
    config (tuned for signscore) changes; a malformed item is refused before anything runs."""
    bench = _benchmark()
    a = bench.parse_args(["--set", "graph.dropout=0.25", "--method-set", "fedavg:graph.dropout=0.5",
                          "--method-set", "fedavg:graph.hidden=64"])
    fedavg, sign = bench.method_config(a, "fedavg", 1), bench.method_config(a, "signscore", 1)
    assert (fedavg.graph.dropout, fedavg.graph.hidden) == (0.5, 64)
    assert sign.graph.dropout == 0.25 and sign.graph.hidden != 64
    assert fedavg.method == "fedavg" and sign.method == "signscore" and sign.seed == 1
    for bad in ("fedavg", "nosuch:graph.hidden=4", "fedavg:graph.hidden"):
        with pytest.raises(SystemExit, match="METHOD:KEY=VALUE"):
            bench.parse_args(["--method-set", bad])


def test_centralized_signscore_trains_the_federated_ticket_on_every_train_node(cora_root):
    """The benchmark's centralized-signscore reference: the signscore ticket trained by one
    learner on the union of the clients' train nodes, scored on each client's test nodes."""
    from fedticket.fl.run import prepare

    bench = _benchmark()
    cfg = prepare(bench.REPO / "configs/fl/cora_graph.yaml",
                  ["graph.hidden=32", "num_clients=4", "clients_per_round=4",
                   "model.prune_iterations=5"], data_root=str(cora_root))
    untrained, trained = bench.centralized_signscore(cfg, 0), bench.centralized_signscore(cfg, 3)
    sizes = [len(sub.test) for sub, _ in bench.clients(cfg, cfg.data.root)]
    for rec in (untrained, trained):
        assert len(rec["client_accuracies"]) == 4
        hits = sum(a * n for a, n in zip(rec["client_accuracies"], sizes))
        assert rec["final_global_accuracy"] == pytest.approx(hits / sum(sizes))
    assert trained["final_global_accuracy"] > untrained["final_global_accuracy"] + 0.1
