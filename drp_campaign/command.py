"""One `drp-campaign` subcommand as a row of the table cli.py builds its parser from.

Its own module so that cli.py (the table, `main`) and campaign_commands.py (the rows that act on a
campaign) both import it and neither imports the other at import time.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

EXIT_OK = 0


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
