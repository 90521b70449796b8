"""Training plumbing for the lottery-ticket toolbox: data splits, a small trainer, the IMP runner.

The algorithms live in :mod:`fedticket.core` (torch only); this package adds what they need to
run on real data: a train/validation/test split, a trainer that records the early-stop
iteration, and ``fedticket lth run`` (IMP with its two controls, resumable).
"""
