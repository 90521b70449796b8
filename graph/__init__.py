"""The graph side of fedticket: graph lottery tickets on PyTorch Geometric.

* :mod:`graph.scores`     TEDDY's degree-based edge score, O(|E|)
* :mod:`graph.transforms` ``TeddyEdgeSparsify`` / ``RandomEdgeSparsify`` (PyG ``BaseTransform``)
* :mod:`graph.edges`      undirected-pair bookkeeping: exact counts, symmetry, nesting
* :mod:`graph.models`     two-layer GCN / GAT / GIN taking per-edge weights and sparse features
* :mod:`graph.train`      full-batch training with distillation and ℓ0-ball projection (core Mask)
* :mod:`graph.ugs`        the UGS baseline (learnable edge and weight masks, rewinding)
* :mod:`graph.sweep`      one seed of a level sweep for every method; :mod:`graph.run` the CLI job
* :mod:`graph.data`       Planetoid loading, offline-friendly

Imports ``fedticket.core`` and the plumbing (config, results, data, errors); never ``fedticket.fl``.
"""
