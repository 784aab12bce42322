"""The ``fedhh`` command line: ``fedhh simulate`` (:mod:`fedhh.cli.simulate`), the gRPC services
(``fedhh coordinator``, ``fedhh query``, ``fedhh party``: ``fedhh.server.cli``,
``fedhh.server.query``, ``fedhh.clients.cli``), ``fedhh deploy local`` and ``fedhh flower run``.
A failure gives one clear error line, never a traceback; the exit status is 0 on success, 1
when the command ran and failed (a server refused, a run failed) or needs an extra that is not
installed, 2 for bad input and 130 when interrupted. Every command module imports only
:mod:`fedhh.cli.common` of this package, so nothing imports it back."""

from __future__ import annotations

import argparse
import os
import sys

# gRPC's C core logs TLS handshakes and reconnects on stderr unless told otherwise; the services
# log what matters themselves (set GRPC_VERBOSITY to see the C core's lines).
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
from collections.abc import Sequence

from fedhh import __version__
from fedhh.cli.common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, Parser
from fedhh.errors import FedHHError, MissingExtra, RunFailed, TransportError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fedhh", description="Federated heavy hitters under ε-LDP.")
    parser.add_argument("--version", action="version", version=f"fedhh {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    from fedhh.cli.simulate import add_simulate_parser  # in one process

    add_simulate_parser(sub)
    from fedhh.cli.compare import add_compare_parser  # several mechanisms, in one process

    add_compare_parser(sub)
    from fedhh.clients.cli import add_party_parser  # deployment over gRPC
    from fedhh.server.cli import add_coordinator_parser
    from fedhh.server.query import add_query_parser

    add_coordinator_parser(sub)
    add_party_parser(sub)
    add_query_parser(sub)
    from fedhh.flower.run import add_flower_parser  # flwr run with the run's status
    from fedhh.ops.deploy import add_deploy_parser  # all of it on this machine, in one command

    add_deploy_parser(sub)
    add_flower_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except (TransportError, RunFailed, MissingExtra) as exc:  # it ran and failed, or cannot here
        print(f"fedhh: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except FedHHError as exc:
        print(f"fedhh: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(
            f"fedhh: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
    except KeyboardInterrupt:
        print("fedhh: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_USAGE
