"""``fedticket``: one entry point, one subcommand per job.

The only module that knows both sides: ``fl`` and ``graph`` are imported lazily, per subcommand,
so ``fedticket prune`` never pays for Flower or PyG imports. Bad input ends in one line on stderr
(``fedticket: error: ...``) and exit code 2, never a traceback, before any work starts (output
paths included); a run that fails after it started ends in one line and exit code 1; Ctrl-C
in exit code 130 with a line saying what was kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Sequence

from fedticket.errors import RunError, UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + error
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W like 3,32,32, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W like 3,32,32, got {text!r}")
    return shape


def _density(text: str) -> float:
    try:
        d = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"density must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < d <= 1.0:
        raise argparse.ArgumentTypeError(f"density must be in (0, 1], got {text}")
    return d


def _int_at_least(low: int, what: str = ""):
    """An argparse type: an integer >= ``low``; anything else is refused, never replaced."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}{what}, got {v}")
        return v
    parse.__name__ = f"integer >= {low}"  # argparse names the type in its messages
    return parse


_POSITIVE = _int_at_least(1)
_NONNEG = _int_at_least(0)
_PORT = _int_at_least(1, " (a TCP port, 1..65535)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set rounds=5")
    p.add_argument("--out", default=None, help="results folder (default: runs/<name>-<time>)")
    p.add_argument("--data-root", default=None, help="data folder (default: config, $FEDTICKET_DATA, ./data)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results already in --out (default: refuse)")


def build_parser() -> argparse.ArgumentParser:
    from fedticket import __version__
    from fedticket.core.scorers import METHODS
    from fedticket.models import MODEL_NAMES

    parser = _Parser(prog="fedticket", description="Lottery tickets for federated and graph learning.")
    parser.add_argument("--version", action="version", version=f"fedticket {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("prune", help="prune a freshly initialised model and report the mask")
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--density", type=_density, default=None,
                   help="fraction of weights kept, in (0, 1] (required unless --nm)")
    p.add_argument("--nm", default=None, metavar="N:M",
                   help="N:M mask: keep N of every M consecutive weights along each output row")
    p.add_argument("--scope", choices=("global", "layer"), default="global")
    p.add_argument("--seed", type=_NONNEG, default=0)
    p.add_argument("--input-shape", type=_shape, default=None,
                   help="C,H,W (default: the dataset's, else 3,32,32)")
    p.add_argument("--num-classes", type=_POSITIVE, default=None,
                   help="model outputs (default: the dataset's, else 10)")
    p.add_argument("--iterations", type=_POSITIVE, default=None,
                   help="pruning iterations (default: 100 for synflow, 1 otherwise)")
    p.add_argument("--double", action="store_true", help="score in float64 (SynFlow on deep nets)")
    p.add_argument("--dataset", default=None, help="data for snip/grasp: fashion-mnist, mnist, cifar10")
    p.add_argument("--data-root", default=None)
    p.add_argument("--batch-size", type=_POSITIVE, default=256)
    p.add_argument("--num-batches", type=_POSITIVE, default=1)
    p.add_argument("--base-mask", default=None, help="continue pruning from this mask file")
    p.add_argument("--out", default=None, help="save the mask here (.safetensors)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("mask", help="inspect a saved mask file")
    msub = p.add_subparsers(dest="mask_command", parser_class=_Parser)
    pi = msub.add_parser("info", help="print a mask's per-layer report; optionally check it against a model")
    pi.add_argument("file")
    pi.add_argument("--model", choices=MODEL_NAMES, default=None)
    pi.add_argument("--input-shape", type=_shape, default=(3, 32, 32))
    pi.add_argument("--num-classes", type=_POSITIVE, default=10)
    pi.add_argument("--json", action="store_true")

    p = sub.add_parser("fl", help="federated sign-supermask tickets on Flower")
    fsub = p.add_subparsers(dest="fl_command", parser_class=_Parser)
    _add_run_args(fsub.add_parser("run", help="run a federated experiment on Flower's simulation engine"))

    p = sub.add_parser("graph", help="graph lottery tickets (TEDDY, UGS, random)")
    gsub = p.add_subparsers(dest="graph_command", parser_class=_Parser)
    pg = gsub.add_parser("run", help="run a graph sparsification sweep")
    _add_run_args(pg)
    pg.add_argument("--levels", default=None, help="comma list of levels to run, e.g. 1,5,10")

    _add_deploy_parser(sub)
    from fedticket.lth.cli import add_parsers as add_lth_parsers

    add_lth_parsers(sub, _Parser)
    return parser


def _add_deploy_parser(sub) -> None:
    p = sub.add_parser("deploy", help="TLS certificates, SuperNode keys and the Flower commands "
                       "of a real (non-simulated) federation")
    dsub = p.add_subparsers(dest="deploy_command", parser_class=_Parser)

    d = dsub.add_parser("certs", help="make a private CA and the SuperLink's TLS certificate")
    d.add_argument("--out", required=True, help="folder for ca.crt, ca.key, server.crt, server.key")
    d.add_argument("--host", action="append", required=True, metavar="H",
                   help="IP or DNS name the SuperNodes and flwr dial (repeatable)")
    d.add_argument("--days", type=_POSITIVE, default=365, help="validity (default: 365)")
    d.add_argument("--force", action="store_true", help="replace existing files")

    d = dsub.add_parser("keys", help="make SuperNode authentication key pairs")
    d.add_argument("names", nargs="+", metavar="NAME", help="one key pair per SuperNode")
    d.add_argument("--out", required=True, help="folder for NAME and NAME.pub")
    d.add_argument("--force", action="store_true", help="replace existing files")

    d = dsub.add_parser("connection", help="add a [superlink.NAME] entry to flwr's config.toml")
    d.add_argument("name", metavar="NAME")
    d.add_argument("--address", required=True, help="the SuperLink's HOST:PORT")
    d.add_argument("--root-certificates", default=None, metavar="CA", help="ca.crt (TLS)")
    d.add_argument("--insecure", action="store_true", help="plain text (trusted lab network only)")
    d.add_argument("--flwr-home", default=None, help="default: $FLWR_HOME, else ~/.flwr")

    d = dsub.add_parser("superlink", help="start flower-superlink (TLS, SuperNode auth)")
    d.add_argument("--certs", default=None, help="folder made by `fedticket deploy certs`")
    d.add_argument("--database", required=True, help="state file (survives a restart)")
    d.add_argument("--port", type=_PORT, default=8000)
    d.add_argument("--host", default="0.0.0.0", help="listen address (default: 0.0.0.0)")
    d.add_argument("--no-auth", action="store_true", help="admit unregistered SuperNodes")
    d.add_argument("--insecure", action="store_true", help="no TLS (needs --no-auth)")
    d.add_argument("--print", action="store_true", help="print the command instead of running it")

    d = dsub.add_parser("supernode", help="start flower-supernode for one data partition")
    d.add_argument("--superlink", required=True, help="the SuperLink's HOST:PORT")
    d.add_argument("--partition-id", type=_NONNEG, required=True)
    d.add_argument("--num-partitions", type=_POSITIVE, required=True)
    d.add_argument("--root-certificates", default=None, metavar="CA", help="ca.crt (TLS)")
    d.add_argument("--key", default=None, help="this SuperNode's private key (deploy keys)")
    d.add_argument("--port", type=_PORT, default=9094, help="ClientAppIo port, one per SuperNode")
    d.add_argument("--data-root", default=None, help="this device's data folder")
    d.add_argument("--state-dir", default=None, help="local client state, for resumable runs")
    d.add_argument("--insecure", action="store_true", help="no TLS (trusted lab network only)")
    d.add_argument("--print", action="store_true", help="print the command instead of running it")

    d = dsub.add_parser("local", help="try a whole deployment on this machine: SuperLink + "
                        "SuperNodes on 127.0.0.1 (TLS, auth), flwr run, then stop them all")
    d.add_argument("--nodes", type=_POSITIVE, default=3, help="SuperNodes, one partition each (default 3)")
    d.add_argument("--rounds", type=_POSITIVE, default=5)
    d.add_argument("--out", default=None, help="folder for the federation's files and the "
                   "results (default: runs/deploy-local-<time>)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run config key (repeatable), e.g. --set method=fedavg")
    d.add_argument("--data-root", default=None, help="data folder (default: $FEDTICKET_DATA, ./data)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.add_argument("--overwrite", action="store_true",
                   help="replace the results already in --out/results (default: refuse)")


def _mask_json(mask, method: str | None, density_target: float | None) -> dict:
    return {"method": method, "density_target": density_target, "density_actual": mask.density,
            "kept": mask.num_kept, "numel": mask.numel, "layers": mask.layer_stats()}


def cmd_prune(args) -> int:
    from fedticket.core import Mask, prune
    from fedticket.core.nm import parse_nm
    from fedticket.models import build_model
    from fedticket.results import check_output_file

    try:
        nm = parse_nm(args.nm) if args.nm else None
    except ValueError as e:
        raise UserError(f"--nm: {e}") from None
    if nm is None and args.density is None:
        raise UserError("--density is required (or give --nm N:M, whose density is N/M)")
    if args.out:  # before any work: no half-written file, no .tmp left behind
        check_output_file(args.out, force=args.force)
    shape, classes, loader = args.input_shape, args.num_classes, None
    if args.method in ("snip", "grasp"):
        if not args.dataset:
            raise UserError(f"--method {args.method} needs data: add --dataset fashion-mnist "
                            "(and --data-root if the data is not in ./data)")
        import torch

        from fedticket.datasets import NUM_CLASSES, canonical_name, input_shape, load_vision_dataset

        name = canonical_name(args.dataset)
        if shape is not None and tuple(shape) != input_shape(name):
            raise UserError(f"--input-shape {shape} does not match {args.dataset} "
                            f"{input_shape(name)}; drop --input-shape")
        shape, classes = input_shape(name), NUM_CLASSES if classes is None else classes
        ds = load_vision_dataset(name, args.data_root, train=True)
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(args.seed))
    elif args.dataset:
        raise UserError(f"--dataset is only used by snip/grasp; {args.method} does not look at data")
    shape = shape or (3, 32, 32)
    classes = 10 if classes is None else classes
    try:
        model = build_model(args.model, shape, classes, seed=args.seed)
    except ValueError as e:
        raise UserError(str(e)) from None
    base = None
    if args.base_mask:
        try:
            base = Mask.load(args.base_mask)
            base.check(model)
        except ValueError as e:
            raise UserError(f"--base-mask: {e}") from None
    try:
        mask = prune(model, args.method, args.density, scope=args.scope, iterations=args.iterations,
                     input_shape=shape, dataloader=loader, num_batches=args.num_batches,
                     seed=args.seed, double=args.double, base=base, nm=nm,
                     progress=not (args.quiet or args.json))
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.out:
        mask.save(args.out)
    if args.json:
        target = args.density if nm is None else nm[0] / nm[1]
        print(json.dumps({**_mask_json(mask, args.method, target), **({"nm": args.nm} if nm else {})}))
    else:
        print(mask.report())
        if args.out:
            print(f"saved mask to {args.out}")
    return 0


def cmd_mask_info(args) -> int:
    from fedticket.core import Mask

    try:
        mask = Mask.load(args.file)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.model:
        from fedticket.models import build_model

        try:
            mask.check(build_model(args.model, args.input_shape, args.num_classes))
        except ValueError as e:
            raise UserError(f"{args.file} does not fit {args.model}: {e}") from None
    if args.json:
        print(json.dumps(_mask_json(mask, None, None)))
    else:
        print(mask.report())
    return 0


def cmd_fl_run(args) -> int:
    """Checks first (nothing starts on bad input), then Flower's local SuperLink simulation."""
    from fedticket.deploy.simulation import run_fl_superlink
    from fedticket.fl.run import preflight, report

    cfg, out = preflight(args)
    summary = run_fl_superlink(cfg, out, quiet=bool(args.quiet))
    if not args.quiet:
        report(cfg, summary, out)
    return 0


def cmd_deploy(args) -> int:
    from fedticket import deploy

    c = args.deploy_command
    if c == "certs":
        paths = deploy.make_certs(args.out, args.host, days=args.days, force=args.force)
        for p in paths.values():
            print(p)
        print(f"valid for: {', '.join(deploy.cert_hosts(paths[deploy.SERVER_CERT]))}")
        print("ca.crt goes to every SuperNode and the flwr CLI (and the SuperLink); server.crt and "
              "server.key to the SuperLink only; ca.key offline (it signs new certificates)")
        return 0
    if c == "keys":
        pairs = [deploy.node_key_paths(args.out, n) for n in args.names]
        if len(set(pairs)) < len(pairs):
            raise UserError(f"key names repeat in {' '.join(args.names)}; give each once")
        # all or nothing: a clash on the third name must not leave two new keys behind
        deploy.refuse_overwrite([p for pair in pairs for p in pair], args.force)
        pubs = []
        for n in args.names:
            priv, pub = deploy.make_node_key(args.out, n, force=True)
            pubs.append(pub)
            print(f"{priv}  (private key of SuperNode {n}: stays on it, as its --key)")
        print("register each with the SuperLink, from a machine with a flwr connection to it:")
        for pub in pubs:
            print(f"{deploy.shell(['flwr', 'supernode', 'register', str(pub)])} <connection>")
        return 0
    if c == "connection":
        path = deploy.write_connection(args.name, args.address, args.root_certificates,
                                       insecure=args.insecure, home=args.flwr_home)
        print(path)
        return 0
    if c in ("superlink", "supernode"):
        if c == "superlink":
            cmd = deploy.superlink_command(args.certs, args.database, port=args.port,
                                           host=args.host, auth=not args.no_auth,
                                           insecure=args.insecure)
        else:
            cmd = deploy.supernode_command(args.superlink, args.partition_id, args.num_partitions,
                                           root_certificates=args.root_certificates, key=args.key,
                                           port=args.port, data_root=args.data_root,
                                           insecure=args.insecure, state_dir=args.state_dir)
        if args.print:
            print(deploy.shell(cmd))
            return 0
        deploy.exec_command(cmd)  # returns only in tests, where execvp is faked
        return 0
    if c == "local":
        from datetime import datetime

        from fedticket.deploy.localfed import run_local

        out = args.out or f"runs/deploy-local-{datetime.now():%Y%m%d-%H%M%S}"
        summary = run_local(args.nodes, args.rounds, out, args.set, args.data_root, args.quiet,
                            overwrite=args.overwrite)
        print(f"{summary['method']}: final global accuracy {summary['final_global_accuracy']:.4f} "
              f"(from {summary['initial_global_accuracy']:.4f}) after {summary['rounds']} "
              f"rounds; uplink {summary['uplink_bytes_per_client_round']:.0f} bytes per client "
              f"per round; results: {out}/results")
        return 0
    raise UserError("choose one of: fedticket deploy certs | keys | connection | superlink | "
                    "supernode | local (see fedticket deploy --help)")


def main(argv: Sequence[str] | None = None) -> int:
    # PyG's import calls torch.jit.script, which torch now flags as deprecated: noise for users,
    # and it would turn a one-line error into three.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "prune":
            return cmd_prune(args)
        if args.command == "mask" and args.mask_command == "info":
            return cmd_mask_info(args)
        if args.command == "fl" and args.fl_command == "run":
            return cmd_fl_run(args)
        if args.command == "graph" and args.graph_command == "run":
            from graph.run import main as graph_main

            return int(graph_main(args) or 0)
        if args.command == "deploy":
            return cmd_deploy(args)
        if args.command == "lth":
            from fedticket.lth.cli import handle

            return handle(args)
        parser.print_help(sys.stderr)
        return 2
    except UserError as e:
        # one line, whatever the message holds (a quoted file line, a Flower message)
        print("fedticket: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except RunError as e:
        print("fedticket: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"fedticket: interrupted{'; ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
