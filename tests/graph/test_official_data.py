"""The graph fedticket trains on is the TEDDY code's: features, labels, split and edges.

The TEDDY code (``utils.load_data``) reads the Planetoid files the way the original GCN code
does: features stacked from ``allx`` and ``tx`` with the test rows put back in index order
(CiteSeer's missing test rows as zero rows), row-normalised as dense floats, the adjacency from
``networkx`` over the ``graph`` dict, the first ``len(y)`` nodes for training and the next 500
for validation. This rebuilds that reading independently and holds fedticket's
``load_planetoid`` to it, so an accuracy gap to the TEDDY code cannot come from the data.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from graph.data import canonical_name, load_planetoid, verify_raw


def _gcn_code_reading(raw: Path, name: str):
    nx = pytest.importorskip("networkx")
    sp = pytest.importorskip("scipy.sparse")
    verify_raw(name, raw)  # the published files only, before anything is unpickled
    parts = {}
    for s in ("x", "y", "tx", "ty", "allx", "ally", "graph"):
        with open(raw / f"ind.{name}.{s}", "rb") as f:
            parts[s] = pickle.load(f, encoding="latin1")
    order = [int(line) for line in (raw / f"ind.{name}.test.index").read_text().split()]
    test = np.sort(order)
    tx, ty = parts["tx"], parts["ty"]
    if name == "citeseer":  # test indices with gaps: the missing rows stay zero
        span = test.max() - test.min() + 1
        full_x = sp.lil_matrix((span, tx.shape[1]))
        full_x[test - test.min(), :] = tx
        full_y = np.zeros((span, ty.shape[1]))
        full_y[test - test.min(), :] = ty
        tx, ty = full_x, full_y
    feats = sp.vstack((parts["allx"], tx)).tolil()
    feats[order, :] = feats[test, :]
    rows = np.asarray(feats.sum(1)).ravel()
    inv = np.divide(1.0, rows, out=np.zeros_like(rows), where=rows != 0)
    x = torch.tensor(np.asarray(sp.diags(inv).dot(feats).todense()), dtype=torch.float32)
    onehot = np.vstack((parts["ally"], ty))
    onehot[order, :] = onehot[test, :]
    y = torch.tensor((onehot * np.arange(onehot.shape[1])).sum(1), dtype=torch.int64)
    g = nx.from_dict_of_lists(parts["graph"])
    nodes = np.array(list(g.nodes()))
    adj = nx.adjacency_matrix(g).tocoo()
    edges = {(int(a), int(b)) for a, b in zip(nodes[adj.row], nodes[adj.col])}
    n_train = len(parts["y"])
    return x, y, test, n_train, edges


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_planetoid_is_the_teddy_codes_graph(name, planetoid_copy, tmp_path):
    root = planetoid_copy(canonical_name(name), tmp_path)
    raw = root / "Planetoid" / canonical_name(name) / "raw"
    x, y, test, n_train, edges = _gcn_code_reading(raw, name)
    data = load_planetoid(name, root)
    assert torch.equal(data.x, x)  # bit for bit, row normalisation included
    assert data.train_mask.nonzero().ravel().tolist() == list(range(n_train))
    assert data.val_mask.nonzero().ravel().tolist() == list(range(n_train, n_train + 500))
    assert data.test_mask.nonzero().ravel().tolist() == test.tolist()
    split = data.train_mask | data.val_mask | data.test_mask
    assert torch.equal(data.y[split], y[split])
    ours = set(map(tuple, data.edge_index.t().tolist()))
    # the same edges; the TEDDY code's adjacency also holds the raw self-loops (CiteSeer has
    # some), which its GCN normalisation replaces by one loop per node, as fedticket's does
    assert ours == {e for e in edges if e[0] != e[1]}
    assert all((b, a) in ours for a, b in ours)
