"""Two gloo processes on 127.0.0.1: identical parameters after training, loss falls, disjoint shares."""

from __future__ import annotations

import pytest
import torch

from graph.distributed import launch, rank_share


def test_two_processes_train_in_lockstep(graph_factory):
    data = graph_factory(num_nodes=150, seed=5)
    res = launch(data, world_size=2, model="gcn", hidden=16, sparsity=0.2, num_neighbors=(5, 5),
                 batch_size=16, epochs=6, lr=0.02, l0_density=0.5, seed=3)
    assert [r.rank for r in res] == [0, 1]
    a, b = res[0].state, res[1].state
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert res[0].losses == res[1].losses  # all-reduced
    assert res[0].losses[-1] < res[0].losses[0]
    s0, s1 = set(res[0].train_nodes), set(res[1].train_nodes)
    assert not s0 & s1 and len(s0) == len(s1)
    assert s0 | s1 <= set(data.train_mask.nonzero().view(-1).tolist())
    assert res[0].test_accuracy is not None and res[0].test_accuracy > 1 / 3


def test_rank_share_is_a_partition():
    nodes = torch.arange(100, 111)
    shares = [rank_share(nodes, r, 3, seed=1) for r in range(3)]
    flat = torch.cat(shares)
    assert flat.unique().numel() == flat.numel() == 9
    with pytest.raises(ValueError, match="fewer processes"):
        rank_share(torch.arange(2), 0, 3, seed=0)
