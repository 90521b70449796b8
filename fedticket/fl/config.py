"""The federated run's config schema: every key typed, documented and validated before anything runs.

One dataclass tree serves both entry points. ``fedticket fl run -c FILE --set k=v`` loads it with
:func:`fedticket.config.load_config`; ``flwr run .`` passes Flower's flat run config
(``[tool.flwr.app.config]`` with dotted keys such as ``"train.lr"``), which
:func:`config_from_run_config` folds back into the same tree, so the two paths cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from fedticket.config import describe, load_config, option, section, to_dict, unflatten
from fedticket.errors import ConfigError

# the vision bench methods (one configs/fl/bench_<method>.yaml each); method= also takes
# signscore-care (issue 12's graph lever, configs/fl/*_graph.yaml)
METHODS = ("hidenseek", "fedavg", "fedavg-subnet", "fedpm", "binary-mask", "signscore")
DATASETS = ("fashionmnist", "mnist", "cifar10")
PARTITIONS = ("iid", "dirichlet", "shards", "pathological")
MODEL_NAMES = ("lenet300", "conv4", "conv6", "vgg16", "resnet18")


_f = option  # the schema below reads best with a short name
_section = section


@dataclass
class DataConfig:
    name: Literal["fashionmnist", "mnist", "cifar10"] = _f(
        "fashionmnist", "Dataset (torchvision): fashionmnist, mnist or cifar10.")
    root: str | None = _f(
        None, "Data root. Order: --data-root flag > this key > $FEDTICKET_DATA > ./data. "
              "torchvision layout, e.g. ROOT/FashionMNIST/raw/.", results=False)
    download: bool = _f(True, "Try a torchvision download when the files are missing (needs internet).", results=False)
    partition: Literal["iid", "dirichlet", "shards", "pathological"] = _f(
        "iid", "flwr-datasets partitioner: iid (IidPartitioner), dirichlet (DirichletPartitioner "
               "over labels, see alpha), shards (ShardPartitioner, McMahan's sort-and-shard, see "
               "shards_per_client), pathological (PathologicalPartitioner, classes_per_client).")
    alpha: float = _f(0.5, "Dirichlet concentration for partition=dirichlet (smaller = more skewed).", gt=0)
    min_partition_size: int = _f(
        10, "partition=dirichlet: resample until every client has at least this many examples.", ge=1)
    shards_per_client: int = _f(2, "partition=shards: label-sorted shards per client.", ge=1)
    classes_per_client: int = _f(2, "partition=pathological: distinct classes per client.", ge=1)
    val_fraction: float = _f(
        0.2, "Fraction of each client's partition held out as its local validation split "
             "(used for personalised accuracy).", gt=0, lt=1)
    train_subset: int | None = _f(
        None, "Use a seeded random subset of this many training examples before partitioning "
              "(null = all). Keeps quick runs quick.", ge=1)
    test_subset: int | None = _f(
        None, "Evaluate the global model on a seeded random subset of this many test examples "
              "(null = the whole central test set).", ge=1)



@dataclass
class ModelConfig:
    name: Literal["lenet300", "conv4", "conv6", "vgg16", "resnet18"] = _f(
        "lenet300", "Architecture from fedticket.models (lenet300, conv4, conv6, vgg16, resnet18).")
    weight_init: Literal["kaiming_normal", "signed_constant", "default"] = _f(
        "kaiming_normal", "Frozen weight init from the seed: kaiming_normal (fan-in, ReLU gain), "
                          "signed_constant (±std of kaiming_normal, as in edge-popup) or default "
                          "(PyTorch's own). Biases start at zero unless 'default'.")
    scale_by_density: bool = _f(
        True, "Multiply each pruned layer's surviving weights by 1/sqrt(layer density) so a "
              "sparse random network keeps unit-scale activations (supermasks cannot rescale).")
    prune_iterations: int = _f(
        100, "SynFlow iterations (exponential schedule) on the server at init; no data is used.", ge=1)



@dataclass
class TrainConfig:
    local_epochs: int = _f(1, "Local epochs per round on each sampled client.", ge=1)
    batch_size: int = _f(32, "Local mini-batch size.", ge=1)
    max_steps: int | None = _f(None, "Cap on local steps per round (null = full epochs).", ge=1)
    optimizer: Literal["sgd", "adam"] = _f("sgd", "Local optimizer (over scores for supermask "
                                                  "methods, over weights for fedavg*).")
    lr: float = _f(0.1, "Learning rate of supermask scores (hidenseek, binary-mask, fedpm).", gt=0)
    weight_lr: float = _f(0.05, "Learning rate of weights for fedavg and fedavg-subnet.", gt=0)
    momentum: float = _f(0.9, "SGD momentum (ignored by adam).", ge=0, lt=1)
    weight_decay: float = _f(0.0, "Weight decay (L2) on the trained tensors.", ge=0)
    score_init: Literal["kaiming", "uniform", "normal", "ones"] = _f(
        "kaiming", "Initial score magnitudes of a client's supermask (signs come from the global "
                   "mask): kaiming (U(±1/sqrt(fan_in))), uniform, normal or ones.")
    keep_local_scores: bool = _f(
        True, "hidenseek / binary-mask with vote: a client keeps its own score magnitudes in "
              "Context.state between rounds (false = redraw them from score_init every round; "
              "the signs/bits always come from the server).")



@dataclass
class FedPMConfig:
    prior: float = _f(1.0, "Beta(prior, prior) prior, reset every round; the server's global "
                           "probability is the posterior mode (prior=1: the mean of the samples).", gt=0)
    theta_init: float = _f(0.5, "Initial Bernoulli probability of every kept weight.", gt=0, lt=1)
    clip: float = _f(0.01, "Global probabilities are clipped to [clip, 1-clip] so scores stay finite.", gt=0, lt=0.5)
    eval_mask: Literal["sample", "threshold"] = _f(
        "sample", "Global evaluation mask: a seeded Bernoulli sample (FedPM) or theta > 0.5.")
    keep_priors: bool = _f(False, "Carry the Beta posterior across rounds (FedPM's improvement) "
                                  "instead of resetting it to Beta(prior, prior) every round.")
    prior_reset_every: int = _f(0, "With keep_priors: reset the Beta posterior to the prior every "
                                   "this many rounds (0 = never).", ge=0)



@dataclass
class SignScoreConfig:
    server_lr: float = _f(0.6, "signscore: server learning rate on the pseudo-gradient (mean ±1 "
                               "vote − server score); 1 with momentum 0 = replace by the vote.", gt=0, le=2)
    server_momentum: float = _f(0.0, "signscore: server momentum on that pseudo-gradient.", ge=0, lt=1)
    temperature: float = _f(1.0, "signscore: a client's bit is 1 with probability "
                                 "sigmoid(2·s/(T·mean abs(s))) (smaller = closer to sign(s)).", gt=0)
    init_margin: float = _f(0.1, "signscore: initial server score of every kept weight (sign +1 "
                                 "= the ticket).", gt=0)
    weight_norm: bool = _f(True, "signscore: rescale each masked layer's kept weights so every "
                                 "output unit's kept fan-in has sum of squares 2 (He), data-free, "
                                 "instead of only model.scale_by_density.")
    weight_gain: float = _f(2.0, "signscore with weight_norm: the sum of squares of every output "
                                 "unit's kept fan-in (2 = He; the logits scale as "
                                 "gain^(layers/2)).", gt=0)
    downlink_levels: int = _f(0, "signscore: also send the server score's magnitude on k bits "
                                 "(0 = signs only); a client then starts its local scores from "
                                 "it instead of from its own stale magnitudes.", ge=0, le=8)
    local_gain: float = _f(1.0, "signscore with downlink_levels: a client's local score = "
                                "sign × dequantized server magnitude × gain / sqrt(fan_in).", gt=0)
    vote_scale: Literal["global", "layer"] = _f(
        "global", "signscore: a client's vote probability sigmoid(2·s/(T·m)) normalises s by m = "
                  "the mean abs score of all kept weights (global) or of the entry's own layer "
                  "(layer: every layer votes equally soft, whatever its fan-in).")
    temperature_final: float | None = _f(
        None, "signscore: anneal the vote temperature from signscore.temperature (round 1) to "
              "this (last round) on a cosine (null = constant).", gt=0)
    server_lr_final: float | None = _f(
        None, "signscore: anneal server_lr from signscore.server_lr (round 1) to this (last "
              "round) on a cosine (null = constant).", gt=0, le=2)
    local_lr_final: float | None = _f(
        None, "signscore: anneal the clients' score lr from train.lr (round 1) to this (last "
              "round) on a cosine (null = constant).", gt=0)
    dither_decode: bool = _f(
        False, "signscore: the server decodes each client's bits with the uniforms they were "
               "drawn with (regenerated from the client's seed; nothing more on the wire): an "
               "unbiased, lower-variance estimate of its soft signs. Not with secure aggregation.")
    score_clip: float = _f(0.0, "signscore: clip the server score to [-c, c] after each step "
                                "(0 = off), so no sign gets too confident to flip.", ge=0)
    uplink_coding: Literal["packed", "entropy"] = _f(
        "packed", "signscore: packed = 1 bit per kept weight; entropy = the client's signs "
                  "range-coded against the global signs it was sent this round (below 1 bit).")
    downlink_coding: Literal["packed", "entropy"] = _f(
        "packed", "signscore: packed = 1 bit per kept weight; entropy = the global signs "
                  "range-coded against the ticket's signs (all +1), which every client holds.")
    uplink_vote: Literal["sign", "delta"] = _f(
        "sign", "signscore: sign = a client sends a stochastic sign of each local score and the "
                "server score is an EMA of their mean; delta = it sends the stochastic ternary "
                "rounding of how far it moved each score this round (per-layer scale, "
                "range-coded) and the server score accumulates their mean (FedAvg over score "
                "changes; see delta_clip, delta_lr, delta_init).")
    delta_clip: float = _f(2.5, "signscore with uplink_vote=delta: a layer's changes are clipped "
                                "to ±(this × their RMS) before ternary rounding (0 = to the max "
                                "abs change: no clipping, sparser, noisier).", ge=0)
    delta_lr: float = _f(1.0, "signscore with uplink_vote=delta: server learning rate on the "
                              "mean decoded change (1 = FedAvg).", gt=0)
    delta_lr_final: float | None = _f(
        None, "signscore with uplink_vote=delta: anneal delta_lr from signscore.delta_lr (round 1) "
              "to this (last round) on a cosine (null = constant).", gt=0)
    delta_init: float = _f(0.5, "signscore with uplink_vote=delta: initial server score of every "
                                "kept weight, times its layer's kaiming bound 1/sqrt(fan_in) "
                                "(0.5 = the mean abs of fresh kaiming scores; sign +1 = the "
                                "ticket).", gt=0)
    local_rescale: Literal["none", "kaiming"] = _f(
        "none", "signscore: none = a client keeps its own (stale) score magnitudes under the "
                "global signs; kaiming = rescales them per layer to the mean abs of fresh kaiming "
                "scores every round (order and signs kept).")
    train_biases: bool = _f(
        False, "signscore with uplink_vote=delta: the clients also train the parameters no mask "
               "covers (biases, norm scales) and send their change as ternary votes; the server "
               "averages them (FedAvg) and sends them down as int8 per tensor "
               "(fedticket/fl/methods/signscore_biases.py).")
    bias_lr: float | None = _f(
        None, "signscore with train_biases: the clients' lr on the biases, on the same cosine as "
              "the scores' (null = train.weight_lr).", gt=0)
    downlink_reference: Literal["held", "ticket"] = _f(
        "held", "signscore with downlink_coding=entropy: held = each node's global signs coded "
                "against the last global it trained from (kept in its Context.state) when that "
                "is smaller, else against the ticket (one message per node); ticket = one "
                "message for all, coded against the ticket.")



@dataclass
class AttackConfig:
    kind: Literal["none", "sign_flip", "random", "label_flip", "scale"] = _f(
        "none", "Poisoned but well-formed updates from attack.fraction of the clients: none, "
                "sign_flip (inverted bits / negated floats), random (uniform bits / Gaussian "
                "floats), label_flip (train on permuted labels), scale (float uplinks only: "
                "global + attack.scale * (update - global)). See fedticket/fl/attack.py.")
    fraction: float = _f(0.0, "Fraction of the num_clients partitions that attack "
                              "(round(fraction * num_clients), drawn from seed).", ge=0, le=1)
    scale: float = _f(10.0, "attack.kind=scale: boost factor of the attacker's update.", gt=0)



@dataclass
class RobustConfig:
    kind: Literal["none", "reputation", "change"] = _f(
        "none", "Vote aggregation of hidenseek / binary-mask (aggregation=vote) and signscore: "
                "none = weighted by example counts; reputation = also by each client's "
                "agreement with the vote over past rounds (weight clip((agreement - 0.5)/0.1, 0, "
                "1): a client agreeing no better than chance gets none); change = reputation, "
                "times a ramp on how many more bits than the round's median client a client "
                "changes (catches label_flip). See fedticket/fl/robust.py.")
    memory: float = _f(0.7, "robust.kind=reputation / change: weight of a client's past "
                            "agreement (and change ratio) in its running value (0 = this round "
                            "only).", ge=0, lt=1)
    change_start: float = _f(1.2, "robust.kind=change: running ratio of a client's changed bits "
                                  "to the round's median client's above which its weight "
                                  "starts to fall.", gt=0)
    change_stop: float = _f(1.5, "robust.kind=change: ratio at which its weight reaches 0 "
                                 "(> robust.change_start).", gt=0)



@dataclass
class EvalConfig:
    personal_every: int = _f(1, "Personalised evaluation every N rounds (0 = never; the last "
                                "round is always evaluated when > 0).", ge=0)
    personal_clients: int | None = _f(
        None, "Clients evaluated for personalised accuracy (seeded sample; null = clients_per_round).", ge=1)
    personalize_steps: int = _f(
        0, "Local steps from the global mask on the client's train split before it is "
           "evaluated on its held-out split (0 = the global mask as is).", ge=0)
    batch_size: int = _f(1000, "Evaluation batch size (server and clients).", ge=1, results=False)



@dataclass
class SimConfig:
    MOVED_KEYS = {"timeout": "use server.train_timeout and server.evaluate_timeout (seconds per "
                             "phase; see server.* in docs/fl.md)"}

    backend: Literal["ray"] = _f("ray", "Flower simulation backend (Ray).")
    cpus_per_client: float = _f(1.0, "Ray CPUs per ClientApp actor; #actors = total CPUs / this.", gt=0)
    num_cpus: int | None = _f(None, "CPUs Ray may use (null = all of this machine's).", ge=1)
    torch_threads: int | None = _f(
        1, "torch threads per process (server and each ClientApp worker); 1 avoids "
           "oversubscribing cores that Ray workers share (null = torch's default).", ge=1)
    ray_address: str | None = _f(
        None, "Address of an existing Ray cluster (its head's host:port, or 'auto') whose nodes "
              "run the ClientApps; the cluster's nodes declare their CPUs, so sim.num_cpus must "
              "stay null. null = the RAY_ADDRESS environment variable if set, else a private "
              "Ray instance on this machine.", results=False)



@dataclass
class ServerConfig:
    connect_timeout: float = _f(
        120.0, "Seconds the server waits at start for num_clients SuperNodes to connect and "
               "answer; after that it goes on with those present if there are at least "
               "min_available_nodes. Also the longest wait before a round for min_available_nodes.", gt=0)
    partitions: Literal["auto", "query", "assign"] = _f(
        "auto", "How the server learns which data partition a node holds. query: it asks every "
                "new node once (a deployment: a node's data is its own). assign: it numbers the "
                "nodes by node id and tells each sampled node its partition in the message "
                "(simulation: any node can load any partition; no message to a node that is not "
                "sampled). auto: assign on Flower's simulation engine, query otherwise. Either way "
                "partition p trains on partition p's data.", results=False)
    query_timeout: float = _f(
        30.0, "Seconds to wait for discovery answers (which partition does a node hold?), also "
              "when a node that failed a round is probed again before it is sampled.", gt=0)
    train_timeout: float = _f(
        600.0, "Seconds a training phase waits for replies; the round then aggregates the "
               "replies that came and logs each missing node by id.", gt=0)
    evaluate_timeout: float = _f(
        120.0, "Seconds a personalised-evaluation phase waits for replies.", gt=0)
    min_available_nodes: int = _f(
        1, "A round starts only when at least this many nodes answer; the server waits up to "
           "connect_timeout for them, then stops with an error (the checkpoint keeps every "
           "completed round: rerun with server.resume=true).", ge=1)
    min_train_replies: int = _f(
        1, "Valid training replies a round needs to change the global model; with fewer the "
           "global model stays as it was (the round still counts and is logged).", ge=1)
    checkpoint: bool = _f(
        True, "Write checkpoint.safetensors in the results folder after every completed round "
              "(atomic: seed, mask, global payload, round, metrics so far).")
    resume: bool = _f(
        False, "Continue the run whose checkpoint is in the results folder at the round after "
               "the last completed one (same config; rounds may grow). Without a checkpoint "
               "the run starts at round 1.")
    overwrite: bool = _f(
        False, "Replace the results already in the results folder (rounds.csv, summary.json, "
               "plots) with a fresh run. Default: a folder holding results is refused before "
               "round 1. `fedticket fl run --overwrite` sets this.")
    client_state_dir: str | None = _f(
        None, "Folder where clients keep their own local state (score magnitudes) per run and "
              "round, so a resumed run continues it exactly. A SuperNode's node config "
              "'state-dir' wins. null = Flower's Context.state only (lost when a run ends, so "
              "a resumed run restarts those magnitudes from train.score_init).")
    secure_aggregation: bool = _f(
        False, "Aggregate the training updates with Flower's SecAgg+ (SecAggPlusWorkflow + "
               "secaggplus_mod): the server learns only the sum of the clients' votes, never "
               "one client's. Vote and count methods sum exactly (same accuracies as without); "
               "fedavg, fedavg-subnet and aggregation=mean_score are quantized. See secagg.* "
               "and docs/fl.md, 'Secure aggregation'.")



@dataclass
class SecAggConfig:
    num_shares: float = _f(
        1.0, "server.secure_aggregation: shares of each client's secrets (SecAgg+'s "
             "num_shares): a whole number >= 3, or a fraction (<= 1) of the sampled clients.", gt=0)
    reconstruction_threshold: float = _f(
        0.6, "server.secure_aggregation: shares needed to rebuild a secret (a whole number "
             "below num_shares, or a fraction <= 1 of them); up to num_shares minus this many "
             "of a client's neighbours may drop out after sharing keys.", gt=0)
    max_examples: int = _f(
        65536, "server.secure_aggregation: largest training set of one client; votes are summed "
               "exactly as integers up to this weight (a client above it refuses the round; "
               "at most 2^29: Flower quantizes to int32).", ge=1, le=2**29)
    clipping_range: float = _f(
        8.0, "server.secure_aggregation, float updates only (fedavg, fedavg-subnet, "
             "mean_score): values are clipped to [-this, this] before quantization.", gt=0)
    quantization_range: int = _f(
        4194304, "server.secure_aggregation, float updates only: quantization levels "
                 "(2^22 = Flower's default; at most 2^30: Flower quantizes to int32).", ge=2, le=2**30)
    modulus_range: int = _f(
        4294967296, "server.secure_aggregation: masks and sums are taken modulo this power "
                    "of two (at most 2^32, Flower's default).", ge=2, le=4294967296)



@dataclass
class GraphTaskConfig:
    dataset: Literal["cora", "citeseer"] = _f(
        "cora", "task=graph: Planetoid citation graph (cora or citeseer) under DATA_ROOT/Planetoid/.")
    partition: Literal["metis", "louvain"] = _f(
        "metis", "task=graph: disjoint node parts, one per client, edges across parts dropped: "
                 "metis (pymetis k-way) or louvain (networkx communities packed into num_clients).")
    model: Literal["gcn", "gin"] = _f("gcn", "task=graph: two-layer GNN of the graph side (gcn or gin).")
    hidden: int = _f(512, "task=graph: hidden units of the GNN.", ge=1)
    dropout: float = _f(0.5, "task=graph: dropout on the GNN's hidden layer.", ge=0, lt=1)
    sparsity: float = _f(
        0.0, "task=graph: graph sparsity, the fraction of its own undirected edges each client "
             "removes with the TEDDY transform before training (0 keeps all).", ge=0, lt=1)
    train_fraction: float = _f(
        0.2, "task=graph: seeded fraction of each client's nodes used for local training.", gt=0, lt=1)
    val_fraction: float = _f(
        0.2, "task=graph: seeded fraction of each client's nodes held out for validation "
             "(personalised accuracy); the rest are its test nodes (global accuracy).", gt=0, lt=1)



@dataclass
class SignCareConfig:
    vote: Literal["ternary", "soft"] = _f(
        "ternary", "signscore-care: ternary = each client votes ±1 on the signcare.keep fraction "
                   "of its kept weights it cares most about and abstains (0) on the rest, "
                   "range-coded; soft = diagnostic float32 uplink of its exact soft signs "
                   "tanh(s/(T·m)) (SignScore's vote without the 1-bit draw).")
    keep: float = _f(0.05, "signscore-care with vote=ternary: fraction of kept weights each "
                           "client votes on per round.", gt=0, le=1)
    care: Literal["grad", "move"] = _f(
        "grad", "signscore-care: how much a client cares about a weight: grad = abs of its score "
                "gradient summed over the local steps; move = abs of its local score change.")
    server: Literal["toward", "accumulate"] = _f(
        "toward", "signscore-care: toward = move the server score toward the mean vote "
                  "(SignScore's step); accumulate = add the mean vote to it (votes sum over "
                  "rounds).")


@dataclass
class FLConfig:
    method: Literal["hidenseek", "fedavg", "fedavg-subnet", "fedpm", "binary-mask", "signscore",
                    "signscore-care"] = _f(
        "signscore", "signscore (the default: stochastic 1-bit signs moving a server-held "
                     "score, see signscore.*), hidenseek (the paper's sign supermask, 1-bit "
                     "majority vote), fedavg (dense float32), fedavg-subnet (float32 of the "
                     "SynFlow-kept weights), fedpm (Bernoulli mask, Beta aggregation), "
                     "binary-mask ({0,1} supermask, majority vote), signscore-care (signscore "
                     "whose clients abstain where they care least, see signcare.*).")
    aggregation: Literal["vote", "mean_score"] = _f(
        "vote", "hidenseek / binary-mask only: vote = weighted majority vote over 1-bit masks "
                "(ties keep the previous global bit); mean_score = ablation that uploads float32 "
                "scores and averages them (weights = example counts).")
    task: Literal["vision", "graph"] = _f(
        "vision", "What the run learns on: vision (data.* and model.name) or graph (node "
                  "classification on disjoint client subgraphs, see graph.*).")
    seed: int = _f(0, "Seed of everything: weights, SynFlow, partitions, sampling, local training.")
    rounds: int = _f(10, "Federated rounds.", ge=1, results=False)
    num_clients: int = _f(10, "Virtual clients (Flower SuperNodes), one data partition each.", ge=1)
    clients_per_round: int = _f(5, "Clients sampled per round (seeded).", ge=1)
    density: float = _f(0.1, "Fraction of prunable weights SynFlow keeps (0 < density <= 1). "
                             "fedavg ignores it (dense).", gt=0, le=1)
    output_dir: str | None = _f(None, "Results folder (--out overrides; null = runs/fl/<time>-<method>).", results=False)
    model: ModelConfig = _section(ModelConfig, "Model and frozen-weight settings.")
    data: DataConfig = _section(DataConfig, "Dataset and partitioning.")
    graph: GraphTaskConfig = _section(GraphTaskConfig, "task=graph: dataset, partition, GNN, "
                                                       "TEDDY sparsity and node split.")
    train: TrainConfig = _section(TrainConfig, "Local training.")
    fedpm: FedPMConfig = _section(FedPMConfig, "FedPM baseline settings.")
    signscore: SignScoreConfig = _section(SignScoreConfig, "SignScore method settings.")
    signcare: SignCareConfig = _section(SignCareConfig, "signscore-care settings (signscore.* "
                                                        "apply too).")
    attack: AttackConfig = _section(AttackConfig, "Poisoned updates (robustness experiments).")
    robust: RobustConfig = _section(RobustConfig, "Robust vote aggregation.")
    eval: EvalConfig = _section(EvalConfig, "Evaluation.")
    sim: SimConfig = _section(SimConfig, "Flower simulation engine.", results=False)
    server: ServerConfig = _section(ServerConfig, "Server: per-phase timeouts, node counts, "
                                                  "checkpoints and resume (both engines).",
                                    results=False)
    secagg: SecAggConfig = _section(SecAggConfig, "Flower SecAgg+ settings "
                                                  "(server.secure_aggregation=true).")

    def validate(self) -> None:
        if self.clients_per_round > self.num_clients:
            raise ConfigError(
                f"clients_per_round must be between 1 and num_clients={self.num_clients}, got "
                f"{self.clients_per_round} (you cannot sample more clients than exist)")
        if self.eval.personal_clients is not None and self.eval.personal_clients > self.num_clients:
            raise ConfigError(f"eval.personal_clients={self.eval.personal_clients} exceeds "
                              f"num_clients={self.num_clients}")
        if self.aggregation != "vote" and self.method not in ("hidenseek", "binary-mask"):
            raise ConfigError(f"aggregation={self.aggregation!r} applies to hidenseek and "
                              f"binary-mask only, not method={self.method!r}")
        if self.server.min_available_nodes > self.num_clients:
            raise ConfigError(f"server.min_available_nodes={self.server.min_available_nodes} "
                              f"exceeds num_clients={self.num_clients}")
        if self.server.min_train_replies > self.clients_per_round:
            raise ConfigError(f"server.min_train_replies={self.server.min_train_replies} exceeds "
                              f"clients_per_round={self.clients_per_round}: no round could "
                              "ever update the global model")
        if self.attack.kind == "label_flip" and self.task != "vision":
            # the derangement is over the vision tasks' 10 classes; a graph's class count differs
            raise ConfigError(f"attack.kind=label_flip is implemented for task=vision only, not "
                              f"task={self.task!r}; use sign_flip or random there")
        if self.attack.kind == "scale" and not (
                self.method in ("fedavg", "fedavg-subnet") or self.aggregation == "mean_score"):
            raise ConfigError(f"attack.kind=scale multiplies float updates; method={self.method!r} "
                              "sends bits (use sign_flip, random or label_flip, or a float-uplink "
                              "method: fedavg, fedavg-subnet, aggregation=mean_score)")
        if (self.method == "signscore-care" and self.signcare.vote == "ternary"
                and self.attack.kind in ("sign_flip", "random")):
            # refused here, not in the attacker's first round: poison_update knows bits and floats
            raise ConfigError(f"attack.kind={self.attack.kind} cannot poison signscore-care's "
                              "ternary votes; use attack.kind=label_flip, or method=signscore")
        if self.robust.kind == "change" and self.robust.change_stop <= self.robust.change_start:
            raise ConfigError(f"robust.change_stop={self.robust.change_stop} must exceed "
                              f"robust.change_start={self.robust.change_start} (the weight "
                              "falls from 1 to 0 between them)")
        if self.robust.kind != "none" and not (
                self.method == "signscore" or (self.method in ("hidenseek", "binary-mask")
                                               and self.aggregation == "vote")):
            raise ConfigError(f"robust.kind={self.robust.kind!r} applies to the vote "
                              "(hidenseek / binary-mask with aggregation=vote, signscore), not "
                              f"method={self.method!r} aggregation={self.aggregation!r}")
        if self.task == "graph" and self.graph.train_fraction + self.graph.val_fraction >= 1:
            raise ConfigError("graph.train_fraction + graph.val_fraction must be < 1 (the rest "
                              "are each client's test nodes)")
        if self.data.partition == "pathological" and self.data.classes_per_client > 10:
            raise ConfigError("data.classes_per_client must be <= 10 (the datasets have 10 classes)")
        if self.method == "signscore" and self.signscore.uplink_vote == "delta":
            self._validate_delta_vote()
        if self.method == "signscore" and self.signscore.train_biases and (
                self.signscore.uplink_vote != "delta"):
            raise ConfigError("signscore.train_biases=true sends the biases' change beside the "
                              "delta vote's score changes; set signscore.uplink_vote=delta")
        if self.server.secure_aggregation:
            self._validate_secagg()

    def _validate_delta_vote(self) -> None:
        sc = self.signscore
        for bad, what in ((sc.dither_decode, "signscore.dither_decode=true"),
                          (sc.downlink_levels > 0, f"signscore.downlink_levels={sc.downlink_levels}"),
                          (self.robust.kind != "none", f"robust.kind={self.robust.kind}"),
                          (self.attack.kind not in ("none", "label_flip"),
                           f"attack.kind={self.attack.kind}"),
                          (self.server.secure_aggregation, "server.secure_aggregation=true")):
            if bad:
                raise ConfigError(f"signscore.uplink_vote=delta sends ternary score changes, which "
                                  f"{what} does not apply to; unset it or use uplink_vote=sign")

    def _validate_secagg(self) -> None:
        s, k = self.secagg, self.clients_per_round
        if self.robust.kind != "none":
            raise ConfigError(f"robust.kind={self.robust.kind} needs each client's own votes, which "
                              "server.secure_aggregation=true hides; use robust.kind=none")
        if self.method == "signscore" and self.signscore.uplink_coding != "packed":
            raise ConfigError("signscore.uplink_coding=entropy sends coded bits, which cannot be "
                              "summed; with server.secure_aggregation=true use uplink_coding=packed")
        if self.method == "signscore" and self.signscore.dither_decode:
            raise ConfigError("signscore.dither_decode needs each client's own bits, which "
                              "server.secure_aggregation=true hides; set dither_decode=false")
        if k < 3:
            raise ConfigError(f"server.secure_aggregation=true needs clients_per_round >= 3 "
                              f"(SecAgg+ shares each secret among >= 3 clients), got {k}")
        for key, v in (("num_shares", s.num_shares),
                       ("reconstruction_threshold", s.reconstruction_threshold)):
            if v > 1 and not float(v).is_integer():
                raise ConfigError(f"secagg.{key}={v:g}: a count must be a whole number (or a "
                                  "fraction <= 1)")
        if s.num_shares > 1 and not 3 <= s.num_shares <= k:
            raise ConfigError(f"secagg.num_shares={s.num_shares:g} must be between 3 and "
                              f"clients_per_round={k} (or a fraction <= 1 of them)")
        if s.num_shares > 1 and s.reconstruction_threshold >= s.num_shares:
            raise ConfigError(f"secagg.reconstruction_threshold={s.reconstruction_threshold:g} "
                              f"must be below secagg.num_shares={s.num_shares:g}")
        if s.modulus_range & (s.modulus_range - 1):
            raise ConfigError(f"secagg.modulus_range={s.modulus_range} must be a power of two")
        from fedticket.fl.secagg_wire import exact_range, mode

        levels = exact_range(self) if mode(self) == "exact" else s.quantization_range
        if k * levels > s.modulus_range:
            raise ConfigError(f"clients_per_round={k} x {levels} quantization levels exceeds "
                              f"secagg.modulus_range={s.modulus_range}: the sum would wrap; "
                              "lower secagg.max_examples (votes) or secagg.quantization_range")

    @property
    def personal_clients(self) -> int:
        return self.eval.personal_clients or self.clients_per_round


def load_fl_config(path=None, overrides=(), base: Mapping[str, Any] | None = None) -> FLConfig:
    """YAML file + ``--set`` overrides -> validated :class:`FLConfig` (ConfigError on any problem)."""
    return load_config(FLConfig, path, overrides, base=dict(base) if base else None)


def config_to_json(cfg: FLConfig) -> str:
    """The config as the setup message carries it to clients. The results folder is the
    server's business: clients never see a server path, and the setup bytes do not depend on
    where the results go (``fedticket fl run --out`` and ``output_dir`` count the same)."""
    d = to_dict(cfg)
    d["output_dir"] = None
    return json.dumps(d, sort_keys=True)


def config_from_json(text: str) -> FLConfig:
    return load_config(FLConfig, None, (), base=json.loads(text))


def config_from_run_config(run_config: Mapping[str, Any]) -> FLConfig:
    """``flwr run .``: ``[tool.flwr.app.config]`` (+ ``--run-config``) -> validated FLConfig.

    TOML has no null, so optional keys are simply left out there; the string "null" also works.
    """
    nullable = {key for key, _t, default, _h in describe_keys() if default is None}
    flat = {}
    for k, v in run_config.items():
        key = str(k).replace("-", "_")
        # Flower only accepts overrides of keys present in pyproject, so optional keys are listed
        # there as "" (TOML has no null); "" and "null" both mean null for them
        flat[key] = None if v == "null" or (v == "" and key in nullable) else v
    return load_config(FLConfig, None, (), base=unflatten(flat))


def describe_keys(cls=FLConfig) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type and range, default, help) of every key: docs/fl.md's table."""
    return describe(cls)
