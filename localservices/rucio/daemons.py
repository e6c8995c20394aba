"""Rucio's own daemons, in-process, with the `local` transfertool plugged in.

    python -m localservices.rucio.daemons once [--rule ID ...] [--timeout 60] [--no-reaper] [--repairer]
    python -m localservices.rucio.daemons loop [--interval 3]
    (run in .venvs/rucio after the bootstrap; scripts/rucio-server.sh daemons-once / start)

One *pass* runs, in this order, each daemon's own code for one iteration (`once=True`) with its
waits at 0: judge-evaluator (rucio.daemons.judge.evaluator.run_once through
rucio.daemons.common.run_daemon, partition wait 0 instead of its built-in 1 s),
conveyor-submitter, conveyor-poller (older_than=0: poll what was just submitted),
conveyor-finisher (partition waits 0 instead of 10 s), judge-cleaner (deletes rules whose
lifetime has passed), then a greedy reaper (deletes replicas whose tombstone has passed).
The judge-repairer (re-tries STUCK rules) runs in loop mode, and in `once` with --repairer.

* `once` repeats passes until the work has *settled*: no transfer request left (of the given
  rules, or at all), no DID waiting for the judge-evaluator, and none of the given rules still
  REPLICATING; then prints one JSON line ({"settled", "passes", "seconds", "rules": {id:
  {"state", "locks_ok", "locks_replicating", "locks_stuck", "error"}}, "pending_requests"}) and
  exits 0, or 1 when --timeout passed first. A failing transfer is retried by Rucio (3 retries),
  so a rule that ends STUCK takes about 4 passes.
* `loop` runs until SIGTERM/SIGINT (the demo's and the e2e stacks' background mode): every
  --interval seconds it asks the database whether anything waits for the conveyor or the
  judge-evaluator (a transfer request, a DID to evaluate: one count each) and runs a pass when
  something does, and at least every --idle-every seconds anyway (rule lifetimes, tombstones, STUCK
  rules). Idle, that is two counts a second instead of seven daemons' queries: a pass costs ~0.1 s
  of CPU, and each e2e stack ran one a second for its whole life.

The transfertool is chosen the way Rucio 41 chooses it: rucio.cfg `[conveyor] transfertool =
local` names it, and the submitter/poller look the name up in
rucio.core.transfer.TRANSFERTOOL_CLASSES_BY_NAME, where `transfertool.register()` puts
`LocalTransfertool` in this process at start-up; no file of rucio is changed.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from logging.handlers import WatchedFileHandler

from localservices.rucio import TRANSFERTOOL_NAME
from localservices.rucio.config import LocalRucio

_STOP = threading.Event()
# State the daemons keep between their iterations (what their own loops would keep).
_PAUSED_DIDS: dict = {}
_PAUSED_RULES: dict = {}
_PAUSED_CLEANER: dict = {}


def setup(local: LocalRucio | None = None, log_file: str | None = None) -> LocalRucio:
    """Point rucio at rucio.cfg, register the local transfertool, send logs to a file."""
    local = local or LocalRucio.from_env()
    if not local.server_cfg.is_file():
        raise SystemExit(
            f"error: {local.server_cfg} does not exist: run "
            "`python -m localservices.rucio.bootstrap` (scripts/rucio-server.sh start) first"
        )
    if "rucio" in sys.modules and os.environ.get("RUCIO_CONFIG") != str(local.server_cfg):
        raise RuntimeError("rucio was imported before RUCIO_CONFIG pointed at " + str(local.server_cfg))
    os.environ["RUCIO_CONFIG"] = str(local.server_cfg)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    path = log_file or str(local.home / "logs" / "daemons.log")
    handler = WatchedFileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.ERROR)
    root.addHandler(console)
    # rucio.common.logging.setup_logging (called by the daemons' run()) is not used: we call the
    # daemon functions below run(), so our handlers stay.
    from localservices.rucio import transfertool

    transfertool.register()
    return local


def run_pass(*, reaper: bool = True, repairer: bool = False, bulk: int = 1000) -> float:
    """One iteration of each daemon, waits at 0; returns the seconds it took."""
    from rucio.daemons.common import run_daemon
    from rucio.daemons.conveyor import finisher, poller, submitter
    from rucio.daemons.judge import cleaner, evaluator
    from rucio.daemons.judge import repairer as repairer_mod
    from rucio.daemons.reaper import reaper as reaper_mod

    t0 = time.monotonic()
    run_daemon(
        once=True,
        graceful_stop=evaluator.graceful_stop,
        executable=evaluator.DAEMON_NAME,
        partition_wait_time=0,
        sleep_time=60,
        run_once_fnc=functools.partial(evaluator.run_once, did_limit=bulk, paused_dids=_PAUSED_DIDS),
    )
    if repairer:
        # As the repairer's own loop: STUCK rules not updated for [repairer] updated_at_delta
        # seconds (Rucio's default 1800) are re-tried.
        from rucio.common.config import config_get_int

        delta = config_get_int("repairer", "updated_at_delta", default=1800, raise_exception=False)
        run_daemon(
            once=True,
            graceful_stop=repairer_mod.graceful_stop,
            executable=repairer_mod.DAEMON_NAME,
            partition_wait_time=0,
            sleep_time=60,
            run_once_fnc=functools.partial(repairer_mod.run_once, paused_rules=_PAUSED_RULES, delta=delta),
        )
    submitter.submitter(
        once=True,
        partition_wait_time=0,
        sleep_time=60,
        bulk=bulk,
        transfertools=[TRANSFERTOOL_NAME],
        filter_transfertool=None,
    )
    poller.poller(
        once=True,
        partition_wait_time=0,
        sleep_time=60,
        older_than=0,
        db_bulk=bulk,
        fts_bulk=100,
        transfertool=TRANSFERTOOL_NAME,
        filter_transfertool=None,
    )
    finisher.finisher(once=True, partition_wait_time=0, sleep_time=60, bulk=bulk, db_bulk=bulk)
    # judge-cleaner: delete rules whose lifetime has passed (released site copies, expired
    # intermediates); with purge_replicas their replicas become the reaper's right away.
    run_daemon(
        once=True,
        graceful_stop=cleaner.graceful_stop,
        executable=cleaner.DAEMON_NAME,
        partition_wait_time=0,
        sleep_time=60,
        run_once_fnc=functools.partial(cleaner.run_once, paused_rules=_PAUSED_CLEANER),
    )
    if reaper:
        reaper_mod.reaper(rses=[], include_rses=None, exclude_rses=None, once=True, greedy=True, sleep_time=60)
    return time.monotonic() - t0


def status(rule_ids: list[str] | None = None) -> dict:
    """Pending work and the state of the given rules, straight from the database."""
    from rucio.db.sqla import models
    from rucio.db.sqla.session import get_session
    from sqlalchemy import func, select

    with get_session()() as session:
        stmt = select(func.count()).select_from(models.Request)
        if rule_ids:
            stmt = stmt.where(models.Request.rule_id.in_(rule_ids))
        pending_requests = session.execute(stmt).scalar_one()
        pending_dids = session.execute(select(func.count()).select_from(models.UpdatedDID)).scalar_one()
        rules = {}
        if rule_ids:
            for rule in session.execute(
                select(models.ReplicationRule).where(models.ReplicationRule.id.in_(rule_ids))
            ).scalars():
                rules[str(rule.id)] = {
                    "state": rule.state.name,
                    "locks_ok": rule.locks_ok_cnt,
                    "locks_replicating": rule.locks_replicating_cnt,
                    "locks_stuck": rule.locks_stuck_cnt,
                    "error": rule.error,
                }
            for rule_id in rule_ids:
                rules.setdefault(rule_id, {"state": "NOT_FOUND"})
    return {"pending_requests": pending_requests, "pending_dids": pending_dids, "rules": rules}


def _settled(st: dict) -> bool:
    return (
        st["pending_requests"] == 0
        and st["pending_dids"] == 0
        and all(r["state"] != "REPLICATING" for r in st["rules"].values())
    )


def run_until_settled(
    rule_ids: list[str] | None = None,
    timeout: float = 60.0,
    reaper: bool = True,
    max_passes: int = 1000,
    repairer: bool = False,
) -> dict:
    t0 = time.monotonic()
    passes = 0
    st = status(rule_ids)
    while passes < max_passes:
        if passes and _settled(st):
            break
        if time.monotonic() - t0 > timeout:
            break
        run_pass(reaper=reaper, repairer=repairer)
        passes += 1
        st = status(rule_ids)
    return {"settled": _settled(st), "passes": passes, "seconds": round(time.monotonic() - t0, 3), **st}


def _waiting() -> bool:
    """Whether a transfer request or a DID waits for the daemons (what a rule or an attach makes)."""
    st = status()
    return bool(st["pending_requests"] or st["pending_dids"])


def loop(interval: float = 3.0, repairer: bool = True, idle_every: float = 10.0) -> None:
    from localservices.rucio.transfertool import prune_results

    def _stop(signum, frame):
        del frame
        logging.info("signal %s: stopping after this pass", signum)
        _STOP.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.info(
        "daemon loop started (pid %d, interval %.1f s, a pass at least every %.1f s)", os.getpid(), interval, idle_every
    )
    last_prune = 0.0
    last_pass = -float("inf")
    while not _STOP.is_set():
        try:
            if time.monotonic() - last_pass >= idle_every or _waiting():
                last_pass = time.monotonic()
                took = run_pass(reaper=True, repairer=repairer)
                logging.debug("pass took %.2f s", took)
        except Exception:
            logging.exception("daemon pass failed; trying again in %.1f s", interval)
        if time.monotonic() - last_prune > 3600:
            prune_results()
            last_prune = time.monotonic()
        _STOP.wait(interval)
    logging.info("daemon loop stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localservices.rucio.daemons", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    once = sub.add_parser("once", help="run passes until the rules settle; print a JSON summary")
    once.add_argument("--rule", action="append", default=[], help="rule id to wait for (repeatable)")
    once.add_argument("--timeout", type=float, default=60.0)
    once.add_argument("--no-reaper", action="store_true")
    once.add_argument("--repairer", action="store_true", help="also the judge-repairer (retries STUCK rules)")
    lp = sub.add_parser("loop", help="run a pass every --interval seconds until SIGTERM")
    lp.add_argument("--interval", type=float, default=3.0, help="how often to look for work (s)")
    lp.add_argument("--idle-every", type=float, default=10.0, help="a pass at least this often, work or not (s)")
    lp.add_argument("--no-repairer", action="store_true")
    args = parser.parse_args(argv)
    setup()
    if args.command == "once":
        result = run_until_settled(
            args.rule or None, timeout=args.timeout, reaper=not args.no_reaper, repairer=args.repairer
        )
        print(json.dumps(result, default=str))
        return 0 if result["settled"] else 1
    loop(args.interval, repairer=not args.no_repairer, idle_every=args.idle_every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
