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

``robust.kind=change`` adds a second, relative test for attackers whose bits look honest, such as
label-flippers (they train honestly on permuted labels, so they agree with the global about as
well as honest clients do). Once the global fits the honest task, a label-flipper has to move
more of its signs away from it than an honest client does: measured on the attack benchmark's
setting (hidenseek, 10 clients, 30 % label-flippers), from round 3 on it changes 1.2-2x the bits
of the round's median client, honest clients 0.5-1.2x (round 1: no difference, everyone moves
~12 %). So each client also carries a running change ratio ``r`` (its changed bits over the
round's median client's, blended with ``robust.memory``), and its weight is multiplied by
``clip((stop - r) / (stop - start), 0, 1)`` (``robust.change_start``, ``robust.change_stop``).
One-sided: moving fewer bits than the median costs nothing. The median is weighted by the clients' trust from the
rounds before, so in a round whose sample holds a majority of known attackers the reference is
still the honest clients' change. It assumes honest clients move about alike (similar data: on
Dirichlet-skewed clients it cuts honest ones and does not defend, docs/fl.md "Benchmark"), and
it needs an honest majority among the clients (not in every sample): with half or more
label-flippers no rule without a reference of the server's own (clean data, as FLTrust) can tell
which half is honest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

RAMP = 0.1   # agreement 0.5 (chance) -> weight 0, agreement >= 0.5 + RAMP -> full weight


class Reputation:
    """Per-client running agreement with the vote (partition id -> agreement in [0, 1]) and,
    with ``change_ramp`` (robust.kind=change), the running change ratio (partition id -> ratio)."""

    def __init__(self, memory: float, change_ramp: Sequence[float] | None = None):
        self.memory = float(memory)
        self.agreement: dict[int, float] = {}
        self.change_ramp = None if change_ramp is None else tuple(float(x) for x in change_ramp)
        self.change: dict[int, float] = {}

    def trust(self, client: int) -> float:
        # a ramp, not a proportional weight: honest clients (well above chance) all count fully,
        # so once the attackers are out the vote is the honest clients' plain vote
        t = min(1.0, max(0.0, (self.agreement.get(client, 1.0) - 0.5) / RAMP))
        if self.change_ramp is not None and client in self.change:
            lo, hi = self.change_ramp
            t *= min(1.0, max(0.0, (hi - self.change[client]) / (hi - lo)))
        return t

    def _blend(self, table: dict[int, float], client: int, now: float) -> None:
        past = table.get(client)
        table[client] = now if past is None else self.memory * past + (1 - self.memory) * now

    def _change_ratios(self, clients: Sequence[int], changed: Sequence[float]) -> list[float]:
        """Each client's changed-bit count over the round's trust-weighted median count."""
        prior = [self.trust(c) for c in clients]
        if not any(prior):
            prior = [1.0] * len(clients)
        order = sorted(range(len(clients)), key=lambda i: changed[i])
        half, acc, med = sum(prior) / 2, 0.0, changed[order[-1]]
        for i in order:
            acc += prior[i]
            if acc >= half:
                med = changed[i]
                break
        # nobody (trusted) moved: every mover is "far above" it; 1 bit keeps the ratio finite
        return [n / max(med, 1.0) for n in changed]

    def weights(self, clients: Sequence[int], bits: Sequence[torch.Tensor],
                weights: Sequence[float], previous: torch.Tensor) -> list[float]:
        """The vote weights of this round's clients; updates their agreements."""
        if len(clients) != len(bits):
            raise ValueError(f"{len(clients)} client ids for {len(bits)} votes")
        if not bits:
            return []
        ref = previous.reshape(-1).bool()
        same = [(b.reshape(-1).bool() == ref) for b in bits]
        if self.change_ramp is not None:   # before the agreements move: the median uses past trust
            ratios = self._change_ratios(clients, [float((~s).sum()) for s in same])
            for c, r in zip(clients, ratios, strict=True):
                self._blend(self.change, c, r)
        for c, s in zip(clients, same, strict=True):
            self._blend(self.agreement, c, float(s.double().mean()))
        out = [float(w) * self.trust(c) for c, w in zip(clients, weights, strict=True)]
        # nobody trusted (all at chance): fall back to the plain vote rather than to no vote
        return out if any(out) else [float(w) for w in weights]

    def state(self, num_clients: int) -> dict[str, torch.Tensor]:
        """The agreements by partition id, NaN for a client never sampled (for the checkpoint)."""
        a = torch.full((num_clients,), math.nan, dtype=torch.float64)
        for c, v in self.agreement.items():
            a[c] = v
        out = {"agreement": a}
        if self.change_ramp is not None:
            r = torch.full((num_clients,), math.nan, dtype=torch.float64)
            for c, v in self.change.items():
                r[c] = v
            out["change"] = r
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.agreement = {c: v for c, v in enumerate(state["agreement"].tolist())
                          if not math.isnan(v)}
        if self.change_ramp is not None:
            self.change = {c: v for c, v in enumerate(state["change"].tolist())
                           if not math.isnan(v)}


def make_reputation(cfg) -> Reputation | None:
    if cfg.robust.kind == "reputation":
        return Reputation(cfg.robust.memory)
    if cfg.robust.kind == "change":
        return Reputation(cfg.robust.memory, (cfg.robust.change_start, cfg.robust.change_stop))
    return None
