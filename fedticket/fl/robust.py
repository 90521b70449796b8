"""Reputation-weighted votes: a client's vote counts by how well it agreed with the vote so far.

The plain vote weighs every client by its example count, so a sampled round with enough
sign-flipping clients turns the global signs over. Here each client carries a running agreement
``a`` (the fraction of its bits equal to the global bit it was sent, i.e. the vote of the
earlier rounds, blended over the rounds it was sampled
in with ``robust.memory``), and its weight is ``examples * clip((a - 0.5) / 0.1, 0, 1)``: an honest client
agrees far better than chance, a sign-flipper worse, a random voter at chance, so the last two
lose their influence, also in the rounds where they happen to be the majority of the sample.

Agreement is measured against the global signs the clients started the round from, not
against this round's vote: a round whose sample happens to hold a majority of attackers would
otherwise vouch for them. Honest clients move few signs per round (agreement near 1), a
sign-flipper inverts them (near 0), a random voter sits at 0.5. In round 1 everyone agrees with
the initial signs about equally; while nobody is trusted the plain vote is taken. The agreements
are in the server checkpoint (``Method.state``), so a resumed server continues them. The server
never needs to know which clients attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

RAMP = 0.1   # agreement 0.5 (chance) -> weight 0, agreement >= 0.5 + RAMP -> full weight


class Reputation:
    """Per-client running agreement with the vote (partition id -> agreement in [0, 1])."""

    def __init__(self, memory: float):
        self.memory = float(memory)
        self.agreement: dict[int, float] = {}

    def trust(self, client: int) -> float:
        # a ramp, not a proportional weight: honest clients (well above chance) all count fully,
        # so once the attackers are out the vote is the honest clients' plain vote
        return min(1.0, max(0.0, (self.agreement.get(client, 1.0) - 0.5) / RAMP))

    def weights(self, clients: Sequence[int], bits: Sequence[torch.Tensor],
                weights: Sequence[float], previous: torch.Tensor) -> list[float]:
        """The vote weights of this round's clients; updates their agreements."""
        if len(clients) != len(bits):
            raise ValueError(f"{len(clients)} client ids for {len(bits)} votes")
        if not bits:
            return []
        ref = previous.reshape(-1).bool()
        for c, b in zip(clients, bits, strict=True):
            now = float((b.reshape(-1).bool() == ref).double().mean())
            past = self.agreement.get(c)
            self.agreement[c] = now if past is None else self.memory * past + (1 - self.memory) * now
        out = [float(w) * self.trust(c) for c, w in zip(clients, weights, strict=True)]
        # nobody trusted (all at chance): fall back to the plain vote rather than to no vote
        return out if any(out) else [float(w) for w in weights]

    def state(self, num_clients: int) -> dict[str, torch.Tensor]:
        """The agreements by partition id, NaN for a client never sampled (for the checkpoint)."""
        a = torch.full((num_clients,), math.nan, dtype=torch.float64)
        for c, v in self.agreement.items():
            a[c] = v
        return {"agreement": a}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.agreement = {c: v for c, v in enumerate(state["agreement"].tolist())
                          if not math.isnan(v)}


def make_reputation(cfg) -> Reputation | None:
    return Reputation(cfg.robust.memory) if cfg.robust.kind == "reputation" else None
