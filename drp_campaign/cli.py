"""The `drp-campaign` command line.

Each subcommand is one `Command` in `COMMANDS`: a function that adds its arguments and a function
that runs it and returns the exit code. To add a subcommand, write those two functions and append
a `Command` to the table; `main` builds the parser from the table and turns a `ConfigError` from
any subcommand into `error: <message>` on stderr and exit status 2.

Stays light (no Airflow, no LSST stack): heavier subcommands import what they need inside `run`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from drp_campaign.campaign_commands import COMMANDS as CAMPAIGN_COMMANDS
from drp_campaign.command import EXIT_OK, Command
from drp_campaign.config import ConfigError, load_campaign
from drp_campaign.errors import DrpError
from drp_campaign.failover import COMMANDS as FAILOVER_COMMANDS
from drp_campaign.operate_commands import COMMANDS as OPERATE_COMMANDS
from drp_campaign.planner.command import COMMANDS as PLAN_COMMANDS
from drp_campaign.workers import COMMANDS as WORKER_COMMANDS

EXIT_CONFIG_ERROR = 2


# --- validate ----------------------------------------------------------------------------------


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "campaigns",
        nargs="+",
        type=Path,
        metavar="CAMPAIGN.yaml",
        help="campaign file(s) to check, with their pipeline and the sites file",
    )
    parser.add_argument(
        "--sites",
        type=Path,
        default=None,
        metavar="FILE",
        help="sites file to check against (default: configs/sites.yaml)",
    )


def validate(args: argparse.Namespace) -> int:
    """Check campaign files; print one summary line each, stop at the first problem."""
    for path in args.campaigns:
        campaign = load_campaign(path, args.sites)
        tracts = sum(len(tracts) for tracts in campaign.tracts.values())
        print(
            f"OK {campaign.name}: {len(campaign.tracts)} sites, {tracts} tracts, "
            f"{len(campaign.steps)} steps, {len(campaign.hops)} hops"
        )
    return EXIT_OK


# --- the table and main ------------------------------------------------------------------------

COMMANDS: list[Command] = [
    Command("validate", "check a campaign file against its pipeline and the sites file", _validate_arguments, validate),
]


def all_commands() -> list[Command]:
    """This table plus the campaign subcommands (seed, run, ledger, review, inventory), the run
    operator's (status, retry, cancel, approve, reject, failover), the planner's (plan) and a site's
    worker (worker: Celery or Edge), which live in their own modules."""
    return [*COMMANDS, *CAMPAIGN_COMMANDS, *OPERATE_COMMANDS, *FAILOVER_COMMANDS, *PLAN_COMMANDS, *WORKER_COMMANDS]


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drp-campaign", description="Campaign controller for Rubin multisite DRP.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands if commands is not None else all_commands():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except DrpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
