"""argparse setup and handlers of ``fedticket lth ...`` (registered by :mod:`fedticket.cli`)."""

from __future__ import annotations

import argparse


def add_parsers(sub, parser_class=argparse.ArgumentParser) -> None:
    p = sub.add_parser("lth", help="lottery tickets: IMP with rewinding and its controls")
    lsub = p.add_subparsers(dest="lth_command", parser_class=parser_class)
    r = lsub.add_parser("run", help="IMP levels, each with the random-reinit and random-mask controls "
                        "(resumes: levels whose outputs exist are skipped)")
    r.add_argument("-c", "--config", required=True, help="YAML config file (configs/lth/*.yaml)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set levels=3")
    r.add_argument("--out", default=None, help="results folder (default: runs/lth/<name>; "
                   "rerunning into it resumes)")
    r.add_argument("--data-root", default=None, help="data folder (default: config, $FEDTICKET_DATA, ./data)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")


def handle(args) -> int | None:
    """Run the ``lth`` subcommand in ``args``; None if ``args`` is not one of ours."""
    if getattr(args, "command", None) != "lth":
        return None
    if args.lth_command == "run":
        from fedticket.lth.runner import main

        return int(main(args) or 0)
    from fedticket.errors import UserError

    raise UserError("choose one of: fedticket lth run (see fedticket lth --help)")
