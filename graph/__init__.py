"""The graph side of fedticket: graph lottery tickets on PyTorch Geometric.

* :mod:`graph.scores`     TEDDY's degree-based edge score, O(|E|)
* :mod:`graph.transforms` ``TeddyEdgeSparsify`` / ``RandomEdgeSparsify`` (PyG ``BaseTransform``)
* :mod:`graph.edges`      undirected-pair bookkeeping: exact counts, symmetry, nesting
* :mod:`graph.models`     two-layer GCN / GAT / GIN taking per-edge weights and sparse features
* :mod:`graph.train`      the one full-batch training loop (distillation, ℓ0-ball PGD, fixed masks, UGS)
* :mod:`graph.ugs`        the UGS baseline (learnable edge and weight masks, rewinding)
* :mod:`graph.levels`     a sparsity level's exact counts (``Level``) and a result row (``LevelRow``)
* :mod:`graph.methods`    the method registry: dense, teddy, ugs, random
* :mod:`graph.sweep`      one seed of a level sweep; :mod:`graph.run` the CLI job and results-folder policy
* :mod:`graph.data`       Planetoid loading, raw files verified against published hashes

Imports ``fedticket.core`` and the plumbing (config, results, data, errors); never ``fedticket.fl``.
"""
