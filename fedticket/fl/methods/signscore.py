"""SignScore: a sign supermask whose global signs come from a server-held real-valued score.

Why (issue 10): HideNseek's hard majority vote re-decides every sign from scratch each round.
In the conv4 / pathological (2 classes per client) setting every client flips ~28 % of its signs
in round 1 to fit its two classes, the vote flips ~24 % of the global signs at once and the frozen
network is dead from round 2 on (train loss = ln 10, score updates ~1e-5, no sign flips; see
docs/fl.md, "SignScore"). SignScore changes three things, each an option:

* **stochastic 1-bit uplink** — a client sends bit = 1 with probability
  sigmoid(2·s / (T·mean|s|)), so its ±1 vote has expectation tanh(s / (T·mean|s|)): the server's
  average is an unbiased estimate of the clients' soft signs (as FedPM samples its masks), not a
  hard sign. Scaling by the client's own mean |score| makes T free of the layer fan-in and lr.
  Still ``ceil(kept/8)`` bytes + header per client (``fedticket.bits``).
* **server-held score** — the server keeps one float per kept weight (starting at
  ``signscore.init_margin``, sign +1 = the ticket) and moves it with the clients' mean vote ``d``
  as a pseudo-gradient: ``v = momentum·v + (d − s)``, ``s += server_lr·v`` (FedBAT / FedMRN). A
  sign flips only when the clients keep voting against it, so one round cannot flip a quarter
  of the network. ``server_lr=1, momentum=0`` with deterministic votes is the plain majority vote.
* **variance-preserving weights** (``signscore.weight_norm``) — SynFlow keeps the largest
  weights and layer densities differ widely (conv4 at 10 %: 99 % … 3.6 %), so the shared
  1/sqrt(density) rescaling over-amplifies: conv4's logits start at std ≈ 30 (loss ≈ 72). This
  option rescales each masked layer, data-free and identically on server and clients, so that
  every output unit's kept fan-in has E[Σ w²] = 2 (He): activations keep their scale.

Below 1 bit (``signscore.uplink_coding`` / ``downlink_coding: entropy``, issue 10 target 3): a
client's signs are range-coded against the global signs it was sent this round (both sides hold
them; most signs do not flip), with the seed of its stochastic draw in the payload so the
coder models each flip by the uniform it was drawn with. The global signs go to each node coded
against the last global that node trained from (its client keeps it in Context.state), or
against the ticket's all-+1 signs when that is smaller or the node holds nothing the server can
be sure of (:class:`HeldDownlink`, ``signscore.downlink_reference``; payload kind
``fedticket.rbits`` names its reference). ``fedticket.core.entropy``; exact decode, a damaged
payload is a rejected reply, one coded against a reference the client lacks is refused.

Downlink: the signs of the server score, 1 bit per kept weight. ``signscore.downlink_levels: k``
adds |score| on k bit-planes (payload kind ``fedticket.slevels``) and the clients start their
local scores from it instead of from their own magnitudes; measured worse on the Dirichlet bench
(docs/fl.md, "Accuracy levers"), so it is off by default. The server score and its velocity are
in the server checkpoint (``state()``), so a resumed run continues them exactly.

``signscore.train_biases`` (delta vote only): the clients train the biases too, beside the
scores; their changes ride in the same payload and the server averages them
(:mod:`fedticket.fl.methods.signscore_biases`). Level on the bench at 50 rounds, so off by default
(docs/fl.md, "Stop 22").
"""

from __future__ import annotations

import copy
import math
import struct

import torch
from flwr.app import Array

from fedticket.core import entropy
from fedticket.core.codec import pack_bits, unpack_bits
from fedticket.core.supermask import kaiming_score_bound
from fedticket.errors import ConfigError
from fedticket.fl import wire
from fedticket.fl.methods import signscore_biases as biases
from fedticket.fl.methods import signscore_delta as delta_vote
from fedticket.fl.methods.base import client_seed, plain_copy
from fedticket.fl.methods.hidenseek import HideNseekMethod, SupermaskLearner
from fedticket.fl.model import Ticket, make_optimizer


def vote_scale(scores: torch.Tensor, segments: list[int] | None = None) -> torch.Tensor:
    """Per entry, the mean |score| it is normalised by: of the whole vector, or (``segments``:
    the sizes of consecutive blocks, e.g. one per layer) of its own block. Never 0."""
    s = scores.reshape(-1).double().abs()
    if segments and sum(segments) != s.numel():
        raise ValueError(f"segments {list(segments)} do not cover {s.numel()} scores")
    blocks = [s] if not segments else list(torch.split(s, list(segments)))
    out = [torch.full_like(b, float(b.mean()) if b.numel() and float(b.mean()) > 0 else 1.0)
           for b in blocks]
    return torch.cat(out) if out else s


def stochastic_sign_bits(scores: torch.Tensor, temperature: float,
                         generator: torch.Generator | None = None,
                         segments: list[int] | None = None) -> torch.Tensor:
    """bit = 1 with probability sigmoid(2s/(T·m)): E[2·bit − 1] = tanh(s/(T·m)), m = mean|s|
    (of the whole vector, or of each block of ``segments``: see :func:`vote_scale`)."""
    s = scores.reshape(-1).double()
    p = torch.sigmoid(2.0 * s / (float(temperature) * vote_scale(s, segments)))
    # one uniform per entry, in order: the uplink coder regenerates exactly these from the seed
    return torch.rand(s.shape, generator=generator, dtype=torch.float64) < p


def anneal(start: float, final: float | None, server_round: int, rounds: int) -> float:
    """A cosine schedule from ``start`` (round 1) to ``final`` (round ``rounds``); ``final``
    None = constant ``start``. Rounds past ``rounds`` stay at ``final``."""
    if final is None or rounds <= 1:
        return float(start)
    t = min(max((server_round - 1) / (rounds - 1), 0.0), 1.0)
    return float(final) + (float(start) - float(final)) * 0.5 * (1.0 + math.cos(math.pi * t))


def layer_sizes(mask) -> list[int]:
    """Kept entries per masked layer, in SupermaskNet's (and the wire's) order."""
    return [int(mask[n].sum()) for n in mask.keys()]


def server_step(score: torch.Tensor, velocity: torch.Tensor, bits: list[torch.Tensor],
                weights: list[float], lr: float, momentum: float, clip: float = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the server score toward the example-weighted mean ±1 vote; returns (score, velocity).

    ``clip > 0`` (``signscore.score_clip``) bounds |score| by ``clip`` after the step, so no
    entry gets so confident that a few rounds of votes against it cannot flip it."""
    total = float(sum(weights))
    d = torch.zeros_like(score, dtype=torch.float64)
    for b, w in zip(bits, weights, strict=True):
        d += (b.reshape(-1).double() * 2 - 1) * (float(w) / total)
    return step_toward(score, velocity, d, lr, momentum, clip)


def step_toward(score: torch.Tensor, velocity: torch.Tensor, d: torch.Tensor, lr: float,
                momentum: float, clip: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The server step of :func:`server_step` given the mean vote ``d`` itself."""
    velocity = momentum * velocity.double() + (d.double() - score.double())
    new = score.double() + lr * velocity
    if clip > 0:
        new = new.clamp(-float(clip), float(clip))
    return new.float(), velocity.float()


def dither_votes(bits: torch.Tensor, u: torch.Tensor, sent: torch.Tensor,
                 bins: int = entropy.DEFAULT_BINS) -> torch.Tensor:
    """One client's ±1 votes decoded with the uniforms ``u`` they were drawn with
    (``signscore.dither_decode``): an unbiased estimate of its soft signs tanh(s/(T·m)) with a
    smaller variance than the bare ±1 bits.

    A client's bit disagrees with the sent sign (a flip) exactly when ``c < q``, ``c`` = u (sent
    −) or 1 − u (sent +), ``q`` its flip probability. Any ``flip + g(c)`` with ∫g = 0 is unbiased
    for ``q``; the variance over this client's entries is smallest for
    ``g(c) = mean(q) − P(flip | c)``, and P(flip | c) is the flip rate of ``c``'s bin (the
    statistic the uplink coder already models). Costs nothing on the wire: the server
    regenerates ``u`` from the client's seed."""
    bits, sent = bits.reshape(-1).bool(), sent.reshape(-1).bool()
    u = u.reshape(-1).double()
    if not bits.numel() == sent.numel() == u.numel():
        raise ValueError(f"{bits.numel()} bits, {sent.numel()} sent signs, {u.numel()} uniforms")
    flip = (bits != sent).double()
    c = torch.where(sent, 1.0 - u, u)
    b = torch.clamp((c * bins).long(), max=bins - 1)
    counts = torch.bincount(b, minlength=bins).double().clamp(min=1)
    rate = torch.zeros(bins, dtype=torch.float64).index_add_(0, b, flip) / counts
    q = flip + (flip.mean() if flip.numel() else 0.0) - rate[b]
    agree = 1.0 - 2.0 * q                     # toward the sent sign
    return torch.where(sent, agree, -agree)


@torch.no_grad()
def variance_preserving(ticket: Ticket, gain: float = 2.0) -> Ticket:
    """A copy of ``ticket`` whose masked layers have E[Σ_kept-fan-in w²] = ``gain`` per output
    unit (2 = He; ``signscore.weight_gain``)."""
    model = copy.deepcopy(ticket.model)
    params = dict(model.named_parameters())
    for name, m in ticket.mask.items():
        p = params[name]
        if p.ndim < 2:
            continue
        w = p * m.to(p.dtype)
        per_unit = (w.reshape(w.shape[0], -1) ** 2).sum(1)
        mean = float(per_unit.mean())
        if mean > 0:
            p.copy_(w * math.sqrt(float(gain) / mean))
    return Ticket(model=model, mask=ticket.mask)


LEVELS = "fedticket.slevels"   # global signs + k bit-planes of the server score's magnitude
_LEVELS_HEAD = struct.Struct("<2sB")   # magic, k; then (1 + k) x (uint32 length, part)
_LEVELS_MAGIC = b"SL"


def quantize_magnitude(score: torch.Tensor, k: int) -> torch.Tensor:
    """|score| clipped to [0, 1] on 2^k uniform cells: the cell index (int64)."""
    cells = 1 << k
    return torch.clamp((score.abs().double().clamp(0, 1) * cells).floor(), max=cells - 1).long()


def dequantize_magnitude(levels: torch.Tensor, k: int) -> torch.Tensor:
    """The middle of each cell: never 0, so a dequantized score always has its sign."""
    return (levels.double() + 0.5) / (1 << k)


def encode_levels(signs: torch.Tensor, levels: torch.Tensor, k: int, coding: str,
                  reference: torch.Tensor) -> Array:
    """Signs (as ``encode_signs``) + the k bit-planes of ``levels``, MSB first; with
    ``coding="entropy"`` each plane is range-coded (one Bernoulli p per plane, in its header)."""
    parts = [encode_signs(signs, coding, reference)]
    zeros = torch.zeros(levels.numel(), dtype=torch.bool)
    for j in reversed(range(k)):
        parts.append(encode_signs(((levels >> j) & 1).bool(), coding, zeros))
    blob = _LEVELS_HEAD.pack(_LEVELS_MAGIC, k)
    for a in parts:
        data = bytes(a.data)
        blob += struct.pack("<I", len(data)) + data
    return wire.raw_array(blob, LEVELS)


def decode_levels(array, n: int, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(signs, levels, k) of an ``encode_levels`` payload, or MalformedPayload."""
    data = wire.raw_bytes(array, LEVELS)
    if len(data) < _LEVELS_HEAD.size:
        raise wire.MalformedPayload("score-level payload shorter than its header")
    magic, k = _LEVELS_HEAD.unpack_from(data)
    if magic != _LEVELS_MAGIC or not 1 <= k <= 8:
        raise wire.MalformedPayload(f"score-level payload: bad magic {magic!r} or k={k}")
    parts = wire.length_prefixed_parts(data, _LEVELS_HEAD.size, 1 + k, "score-level payload")

    def arr(blob):
        stype = wire.CODED_BITS if blob[:len(entropy.MAGIC)] == entropy.MAGIC else wire.BITS
        return wire.raw_array(blob, stype)

    signs = decode_signs(arr(parts[0]), n, reference)
    zeros = torch.zeros(n, dtype=torch.bool)
    levels = torch.zeros(n, dtype=torch.long)
    for blob in parts[1:]:
        levels = (levels << 1) | decode_signs(arr(blob), n, zeros).long()
    return signs, levels, k


def local_bounds(mask) -> torch.Tensor:
    """Per kept entry (SupermaskNet's order: the mask's layers, row-major), its layer's kaiming
    score bound 1/sqrt(fan_in): the scale a client's scores start at."""
    out = [torch.full((int(mask[n].sum()),), kaiming_score_bound(tuple(mask[n].shape)))
           for n in mask.keys()]
    return torch.cat(out) if out else torch.zeros(0)


def rescaled_to_kaiming(scores: torch.Tensor, mask) -> torch.Tensor:
    """``scores`` with each layer's magnitudes rescaled so their mean is the mean of fresh
    kaiming scores (bound/2), signs and order kept (``signscore.local_rescale: kaiming``): a
    client's stale magnitudes keep its preferences but not the scale they grew to."""
    s = scores.reshape(-1).double()
    out = []
    for blk, b in zip(torch.split(s, layer_sizes(mask)),
                      [kaiming_score_bound(tuple(mask[n].shape)) for n in mask.keys()],
                      strict=True):
        m = float(blk.abs().mean()) if blk.numel() else 0.0
        out.append(blk * (0.5 * b / m) if m > 0 else blk)
    return (torch.cat(out) if out else s).float()


def encode_signs(bits: torch.Tensor, coding: str, reference: torch.Tensor | None,
                 dither_seed: int | None = None):
    """Packed bits, or (``coding="entropy"``) bits range-coded against ``reference``."""
    if coding == "entropy":
        return wire.coded_bits_array(bits, reference, dither_seed)
    return wire.bits_array(bits)


def decode_signs(array, n: int, reference: torch.Tensor | None,
                 held: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Any sign kind by its ``stype`` (a coded payload needs ``reference``, a referenced one
    the ticket's signs as ``reference`` and what the receiver ``held``); MalformedPayload."""
    if getattr(array, "stype", None) == wire.REF_BITS:
        if reference is None:
            raise wire.MalformedPayload("referenced sign payload, but no ticket signs")
        return wire.decode_referenced_bits_array(array, n, reference, held)
    if getattr(array, "stype", None) == wire.CODED_BITS:
        if reference is None:
            raise wire.MalformedPayload("coded sign payload, but no reference signs to decode "
                                        "it against")
        return wire.decode_coded_bits_array(array, n, reference)
    return wire.decode_bits_array(array, n)


class HeldDownlink:
    """The server's side of the per-node downlink (``signscore.downlink_reference: held``).

    A node that replied with a valid update in round r holds round r's global signs (its client
    keeps them in Context.state before training). Its next message is coded against them when
    that is smaller than against the ticket, and says which (``fedticket.rbits``); a node never
    seen, or one that was sent a message and gave no valid reply (it may or may not hold it),
    gets the ticket-coded one, which every client can decode. The table is not checkpointed: a
    resumed run is a new Flower run whose clients start with an empty Context.state.

    Cost on the server: one packed copy of the global signs per round some node still holds
    (at most one per round, fewer as nodes are resampled) and one encode per reference round
    in use this phase (nodes holding the same round share the payload).
    """

    def __init__(self, ticket_signs: torch.Tensor):
        self.ticket = ticket_signs
        self.held: dict[int, int] = {}                  # partition id -> round it holds
        self.globals: dict[int, bytes] = {}            # round -> its global signs, packed
        self._cache: dict[tuple, Array] = {}

    def broadcast(self, server_round: int, signs: torch.Tensor) -> None:
        live = set(self.held.values())
        self.globals = {r: g for r, g in self.globals.items() if r in live}
        self.globals[server_round] = pack_bits(signs)
        self._cache = {}

    def payload(self, partition_id: int, signs_of, train: bool) -> Array:
        """This node's payload for the global ``signs_of()`` (train: this round's broadcast;
        evaluate: the new global)."""
        r = self.held.get(partition_id)
        key = (train, r)
        if key not in self._cache:
            signs = signs_of()
            best = wire.referenced_bits_array(signs, self.ticket, None)
            if r is not None and r in self.globals:
                ref = unpack_bits(self.globals[r], self.ticket.numel())
                own = wire.referenced_bits_array(signs, ref, r)
                best = own if len(own.data) < len(best.data) else best
            self._cache[key] = best
        return self._cache[key]

    def delivered(self, server_round: int, sent, acked) -> None:
        for pid in sent:
            self.held.pop(int(pid), None)
        for pid in acked:
            self.held[int(pid)] = server_round
        live = set(self.held.values()) | {server_round}
        self.globals = {r: g for r, g in self.globals.items() if r in live}
        self._cache = {}


class SignScoreLearner(SupermaskLearner):
    """HideNseek's client (local magnitudes, signs from the server) with a stochastic sign uplink."""

    _global: torch.Tensor | None = None
    _start: torch.Tensor | None = None   # the scores right after load_global (delta vote)
    _round = 1   # the round being trained (for signscore.local_lr_final)
    _referenced = False
    _bias_start: torch.Tensor | None = None

    def __init__(self, cfg, ticket, partition_id, local_state=None, kind="sign"):
        if cfg.signscore.train_biases:
            # its own copy: the biases it trains must not move the shared ticket's
            ticket = Ticket(model=copy.deepcopy(ticket.model), mask=ticket.mask)
        super().__init__(cfg, ticket, partition_id, local_state, kind=kind)
        self._free = (biases.free_parameters(self.net.model, ticket.mask)
                      if cfg.signscore.train_biases else [])
        for _, p in self._free:
            p.requires_grad_(True)

    def load_global(self, array) -> None:
        n = self.net.num_kept
        if self._free:
            if not biases.has_biases(array):
                raise wire.MalformedPayload("signscore.train_biases: the global has no biases")
            array, part = biases.detach(array)
            biases.load_vector(self._free, biases.dequantize(part, biases.sizes(self._free)))
            self._bias_start = biases.vector(self._free)
        self._referenced = getattr(array, "stype", None) == wire.REF_BITS
        ticket_signs = torch.ones(n, dtype=torch.bool)
        if getattr(array, "stype", None) == LEVELS:
            # start from the federation's confidence, not from this client's stale magnitudes
            self._global, levels, k = decode_levels(array, n, ticket_signs)
            mag = dequantize_magnitude(levels, k) * local_bounds(self.ticket.mask).double()
            mag = mag * float(self.cfg.signscore.local_gain)
            self.net.load_score_vector(torch.where(self._global, mag, -mag).float())
            return
        self._global = decode_signs(array, n, ticket_signs, self.held_global)
        self.net.load_mask_bits(self._global)
        if self.cfg.signscore.local_rescale == "kaiming":
            self.net.load_score_vector(rescaled_to_kaiming(self.net.score_vector(),
                                                           self.ticket.mask))
        # the delta vote reports the change from here
        self._start = self.net.score_vector().clone()

    def optimizer(self):
        # signscore.local_lr_final: the clients' score lr follows a cosine over the run's rounds
        lr = anneal(self.cfg.train.lr, self.cfg.signscore.local_lr_final, self._round,
                    self.cfg.rounds)
        opt = make_optimizer(self.net.scores.parameters(), self.cfg, lr)
        if self._free:
            base = self.cfg.signscore.bias_lr or self.cfg.train.weight_lr
            opt.add_param_group({"params": [p for _, p in self._free],
                                 "lr": base * lr / float(self.cfg.train.lr)})
        return opt

    def train(self, x, y, server_round, max_steps=None, epochs=None):
        self._round = server_round
        return super().train(x, y, server_round, max_steps=max_steps, epochs=epochs)

    def coding_reference(self):
        return self._global

    def global_to_keep(self):
        # only a server that codes per node needs it (it then sends the rbits kind)
        return self._global if self._referenced else None

    def update(self, server_round):
        sc = self.cfg.signscore
        seed = client_seed(self.cfg, server_round, self.partition_id, 7)
        if sc.uplink_vote == "delta":
            n = self.net.num_kept
            t, scales = delta_vote.ternary_round(self.net.score_vector() - self._start,
                                                 layer_sizes(self.ticket.mask), sc.delta_clip,
                                                 entropy.dither(seed, n))
            out = delta_vote.encode_ternary(t, scales, seed, self._global)
            if self._free:
                change = biases.vector(self._free) - self._bias_start
                out = biases.attach(out, biases.encode_change(
                    change, biases.sizes(self._free),
                    client_seed(self.cfg, server_round, self.partition_id, 8)))
            return out
        g = torch.Generator().manual_seed(seed)
        temperature = anneal(sc.temperature, sc.temperature_final, server_round, self.cfg.rounds)
        segments = layer_sizes(self.ticket.mask) if sc.vote_scale == "layer" else None
        bits = stochastic_sign_bits(self.net.score_vector(), temperature, g, segments)
        # the coder regenerates the uniforms from the seed: flips become predictable from them
        return encode_signs(bits, self.cfg.signscore.uplink_coding, self._global, seed)


class SignScoreMethod(HideNseekMethod):
    """1-bit stochastic signs up, a server-held score with lr and momentum, 1-bit signs down."""

    name = "signscore"

    def __init__(self, cfg, ticket):
        if cfg.signscore.weight_norm:
            ticket = variance_preserving(ticket, cfg.signscore.weight_gain)
        super().__init__(cfg, ticket)
        self._score: torch.Tensor | None = None
        self._velocity: torch.Tensor | None = None
        self._sent: torch.Tensor | None = None   # the global signs this round's clients got
        self._ticket_signs = torch.ones(self.ticket.kept, dtype=torch.bool)
        self._downlink = HeldDownlink(self._ticket_signs) if (
            cfg.signscore.downlink_coding == "entropy" and cfg.signscore.downlink_reference == "held"
            and not int(cfg.signscore.downlink_levels)) else None
        self._free = (biases.free_parameters(self.ticket.model, self.ticket.mask)
                      if cfg.signscore.train_biases else None)
        if self._free is not None and not self._free:
            raise ConfigError(f"signscore.train_biases=true, but model {cfg.model.name!r} has no "
                              "parameters outside the mask (no biases); set it false")
        self._bias_sizes = biases.sizes(self._free) if self._free else []
        self._bias: torch.Tensor | None = None   # the server's float biases (train_biases)

    @property
    def uplink_kind(self) -> str:
        if self.cfg.signscore.uplink_vote == "delta":
            return delta_vote.TERNARY
        return wire.CODED_BITS if self.cfg.signscore.uplink_coding == "entropy" else wire.BITS

    @property
    def _delta(self) -> bool:
        return self.cfg.signscore.uplink_vote == "delta"

    def _initial_magnitude(self) -> torch.Tensor:
        if self._delta:
            return delta_vote.initial_score(local_bounds(self.ticket.mask),
                                            self.cfg.signscore.delta_init)
        return torch.full((self.ticket.kept,), float(self.cfg.signscore.init_margin))

    def _global(self, bits: torch.Tensor):
        k = int(self.cfg.signscore.downlink_levels)
        if k:
            return encode_levels(bits, quantize_magnitude(self._score, k), k,
                                 self.cfg.signscore.downlink_coding, self._ticket_signs)
        out = encode_signs(bits, self.cfg.signscore.downlink_coding, self._ticket_signs)
        if self._free:
            out = biases.attach(out, biases.quantize(self._bias, self._bias_sizes))
        return out

    def _signs(self, array) -> torch.Tensor:
        if biases.has_biases(array):
            array = biases.detach(array)[0]
        if getattr(array, "stype", None) == LEVELS:
            return decode_levels(array, self.ticket.kept, self._ticket_signs)[0]
        return decode_signs(array, self.ticket.kept, self._ticket_signs)

    def on_broadcast(self, server_round, array):
        self._sent = self._signs(array)
        if self._downlink is not None:
            self._downlink.broadcast(server_round, self._sent)

    def downlink(self, partition_id, server_round, array, train):
        if self._downlink is None:
            return array
        out = self._downlink.payload(
            partition_id, (lambda: self._sent) if train else (lambda: self._signs(array)), train)
        return biases.attach(out, biases.detach(array)[1]) if self._free else out

    def delivered(self, server_round, sent, acked):
        if self._downlink is not None:
            self._downlink.delivered(server_round, sent, acked)

    def decode_update(self, array):
        if self._delta:
            if self._sent is None:
                raise wire.MalformedPayload("ternary update, but no global signs were broadcast")
            if self._free:   # the score changes, then the bias changes, in one vector
                inner, part = biases.detach(array)
                return torch.cat([
                    delta_vote.decode_ternary(inner, layer_sizes(self.ticket.mask), self._sent),
                    biases.decode_change(part, self._bias_sizes)])
            return delta_vote.decode_ternary(array, layer_sizes(self.ticket.mask), self._sent)
        if self.uplink_kind == wire.CODED_BITS:
            if self._sent is None:
                raise wire.MalformedPayload("coded update, but no global signs were broadcast")
            return wire.decode_coded_bits_array(array, self.ticket.kept, self._sent)
        return wire.decode_bits_array(array, self.ticket.kept)

    def initial_global(self):
        self._score = self._initial_magnitude()
        self._velocity = torch.zeros(self.ticket.kept)
        if self._free:
            self._bias = biases.vector(self._free)
        return self._global(self._score >= 0)

    def eval_model(self, global_array, server_round):
        self._net.load_mask_bits(self._signs(global_array), magnitude=1.0)
        model = plain_copy(self.ticket.model, self._net.effective_state_dict())
        if self._free:   # the int8 biases the clients got, not the server's float ones
            part = biases.detach(global_array)[1]
            biases.load_vector(biases.free_parameters(model, self.ticket.mask),
                               biases.dequantize(part, self._bias_sizes))
        return model

    def aggregate(self, server_round, updates, weights, current):
        if self._score is None:  # a resumed server: only the signs survived
            prev = self._signs(current)
            margin = self._initial_magnitude()
            self._score = torch.where(prev, margin, -margin).float()
            self._velocity = torch.zeros(self.ticket.kept)
            if self._free:
                self._bias = biases.dequantize(biases.detach(current)[1], self._bias_sizes)
        if updates and self._delta:
            sc = self.cfg.signscore
            lr = anneal(sc.delta_lr, sc.delta_lr_final, server_round, self.cfg.rounds)
            if self._free:   # FedAvg on the biases' changes; the scores as without them
                k, total = self.ticket.kept, float(sum(weights))
                step = sum(u.reshape(-1)[k:].double() * (float(w) / total)
                           for u, w in zip(updates, weights, strict=True))
                self._bias = (self._bias.double() + step).float()
                updates = [u.reshape(-1)[:k] for u in updates]
            self._score, self._velocity = delta_vote.delta_step(
                self._score, self._velocity, list(updates), list(weights), lr, sc.server_momentum)
        elif updates:
            if self.reputation is not None:   # robust.kind=reputation (see fedticket/fl/robust.py)
                weights = self.reputation.weights(self.clients, updates, weights, self._score >= 0)
            sc = self.cfg.signscore
            lr = anneal(sc.server_lr, sc.server_lr_final, server_round, self.cfg.rounds)
            if sc.dither_decode:
                d = self._dithered_mean(server_round, updates, weights)
                self._score, self._velocity = step_toward(
                    self._score, self._velocity, d, lr, sc.server_momentum, clip=sc.score_clip)
            else:
                self._score, self._velocity = server_step(
                    self._score, self._velocity, list(updates), list(weights), lr,
                    sc.server_momentum, clip=sc.score_clip)
        return self._global(self._score >= 0)

    def _dithered_mean(self, server_round, updates, weights) -> torch.Tensor:
        """The example-weighted mean of the clients' :func:`dither_votes`."""
        if len(self.clients) != len(updates) or self._sent is None:
            raise ValueError("signscore.dither_decode needs each update's client id and the "
                             "broadcast signs (not available under secure aggregation)")
        total = float(sum(weights))
        d = torch.zeros(self.ticket.kept, dtype=torch.float64)
        for pid, b, w in zip(self.clients, updates, weights, strict=True):
            u = entropy.dither(client_seed(self.cfg, server_round, pid, 7), self.ticket.kept)
            d += dither_votes(b, u, self._sent) * (float(w) / total)
        return d

    def learner(self, partition_id, local_state=None):
        return SignScoreLearner(self.cfg, self.ticket, partition_id, local_state, kind=self.kind)

    # ---- checkpointed state: a resumed server continues the very score (Method.state) -------
    def state(self):
        own = {} if self._score is None else {"score": self._score, "velocity": self._velocity}
        if self._bias is not None:
            own["bias"] = self._bias
        return {**super().state(), **own}

    def load_state(self, state):
        super().load_state(state)
        self._score, self._velocity = state["score"].float(), state["velocity"].float()
        if self._free:
            self._bias = state["bias"].float()
