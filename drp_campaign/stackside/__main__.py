"""Stack-side CLI: `python -m drp_campaign.stackside <subcommand> ...` in the science-stack env.

Every subcommand prints one JSON object (its result) on stdout and writes it to --result FILE when
given; exit 0 when it ran (even if quanta failed: the result says so). Infrastructure errors and
bad arguments exit non-zero with one line on stderr naming what failed and what to do.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ._errors import StacksideError

EXIT_ERROR = 2


def _tracts(text: str | None) -> list[int] | None:
    if text is None or text.strip() == "":
        return None
    try:
        return sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise StacksideError(f"--tracts {text!r}: expected comma-separated integers, e.g. 0,1") from None


def _load(loader, *args):
    """Call a drp_campaign.config loader; a refused file becomes a StacksideError (one line, exit 2)."""
    from ..config import ConfigError

    try:
        return loader(*args)
    except ConfigError as exc:
        raise StacksideError(str(exc)) from None


def _campaign(args):
    from ..config import load_campaign

    # Checked against the same sites file --repo defaults come from.
    return _load(load_campaign, args.campaign, args.sites)


def _repo(args) -> Path:
    if getattr(args, "repo", None):
        return Path(args.repo).expanduser().resolve()
    site = getattr(args, "site", None)
    if not site:
        raise StacksideError("--repo is required (or --site with a sites.yaml entry)")
    from ..config import load_sites

    sites = _load(load_sites, args.sites)
    if site not in sites.sites:
        raise StacksideError(f"{sites.file}: unknown site {site!r}; known: {', '.join(sorted(sites.sites))}")
    return sites.sites[site].butler_repo_path()


def cmd_seed_repo(args) -> dict[str, Any]:
    from .repo import seed_repo
    from .sky import campaign_tracts

    campaign = _campaign(args)
    tracts = campaign_tracts(campaign) if args.all_tracts else _tracts(args.tracts)
    return seed_repo(campaign, args.site, _repo(args), tracts=tracts, data=not args.no_data)


def cmd_export_inputs(args) -> dict[str, Any]:
    from .placement import export_inputs
    from .repo import site_tracts

    campaign = _campaign(args)
    tracts = _tracts(args.tracts) or site_tracts(campaign, args.site)
    return export_inputs(campaign, args.site, tracts, _repo(args), Path(args.manifest).resolve())


def cmd_check_datasets(args) -> dict[str, Any]:
    from .placement import check_datasets

    return check_datasets(_repo(args), Path(args.manifest).resolve())


def cmd_check_inputs(args) -> dict[str, Any]:
    from .repo import check_inputs, site_tracts

    campaign = _campaign(args)
    tracts = [] if args.chain_only else _tracts(args.tracts) or site_tracts(campaign, args.site)
    return check_inputs(campaign, args.site, _repo(args), tracts, args.chain, args.overlap_chain)


def cmd_run_step(args) -> dict[str, Any]:
    from .step import run_step

    campaign = _campaign(args)
    return run_step(
        campaign,
        site=args.site,
        repo=_repo(args),
        step=args.step,
        chain=args.chain,
        output_run=args.output_run,
        tracts=_tracts(args.tracts),
        faults=args.fail,
        config_overrides=args.config,
        dry_run=args.dry_run,
        result_path=Path(args.result).resolve() if args.result else None,
        processes=args.processes,
    )


def cmd_bps_submit(args) -> dict[str, Any]:
    from .. import graph
    from .bps_run import submit

    campaign = _campaign(args)
    group = graph.WorkGroup(args.group, tuple(_tracts(args.tracts) or ()))
    return submit(
        campaign,
        site=args.site,
        repo=_repo(args),
        step=args.step,
        group=group,
        key=args.key,
        chain=args.chain,
        run_dir=Path(args.run_dir).resolve(),
        faults=args.fail,
        job_fault=args.job_fault,
        config_overrides=args.config,
    )


def cmd_bps_report(args) -> dict[str, Any]:
    from .bps_run import report

    return report(
        _campaign(args),
        Path(args.run_dir).resolve(),
        update_chain=not args.no_chain,
        accept_failures=args.accept_failures,
    )


def cmd_bps_restart(args) -> dict[str, Any]:
    from .bps_run import restart

    return restart(_campaign(args), Path(args.run_dir).resolve())


def cmd_bps_cancel(args) -> dict[str, Any]:
    from .bps_run import cancel

    return cancel(Path(args.run_dir).resolve())


def cmd_bps_status(args) -> dict[str, Any]:
    from .bps_run import run_state

    return {"run_dir": args.run_dir, "state": run_state(Path(args.run_dir).resolve())}


def cmd_export_hop(args) -> dict[str, Any]:
    from .hop import export_hop

    return export_hop(_repo(args), args.collections, args.dataset_types, Path(args.manifest).resolve(), args.also)


def cmd_ingest_hop(args) -> dict[str, Any]:
    from .hop import ingest_hop

    return ingest_hop(
        _repo(args), Path(args.manifest).resolve(), Path(args.replica_dir).resolve(), args.chain, args.not_chained
    )


def cmd_forget_datasets(args) -> dict[str, Any]:
    from .hop import forget_datasets

    return forget_datasets(_repo(args), Path(args.ids).resolve())


def cmd_count_datasets(args) -> dict[str, Any]:
    from .repo import count_datasets

    return count_datasets(_repo(args), args.collections, args.dataset_types)


def cmd_software_report(args) -> dict[str, Any]:
    from .software import software_report

    return software_report(_campaign(args))


def config_option(sp) -> None:
    sp.add_argument(
        "--config",
        action="append",
        metavar="LABEL:FIELD=VALUE",
        help="override one config field of task LABEL (a number or True/False), e.g. "
        "makeObjectTable:flux_calibration_scale=1.01",
    )


def cmd_site_qa(args) -> dict[str, Any]:
    from .site_qa_butler import site_qa

    if not args.repo:
        raise StacksideError("--repo is required: the hub's Butler repo, where both sites' copies came home")
    return site_qa(_campaign(args), _repo(args), args.key, Path(args.report_dir).resolve(), _tracts(args.tracts))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m drp_campaign.stackside", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, *, campaign: bool = False, site: bool = False, site_required: bool = False):
        if campaign:
            sp.add_argument("--campaign", required=True, help="campaign YAML file")
        if site:
            sp.add_argument(
                "--site", required=site_required, help="site name (as in the campaign's tracts and sites.yaml)"
            )
        sp.add_argument("--repo", help="Butler repo path (default: the site's butler_repo in sites.yaml)")
        sp.add_argument("--sites", help="sites.yaml (default: configs/sites.yaml)")
        sp.add_argument("--result", help="also write the result JSON to this file")

    sp = sub.add_parser("seed-repo", help="create a site repo with the synthetic sky and its raws")
    common(sp, campaign=True, site=True, site_required=True)
    sp.add_argument("--tracts", help="put raws for these tracts instead of the site's (comma-separated)")
    sp.add_argument("--all-tracts", action="store_true", help="put raws for every tract of the campaign (the hub)")
    sp.add_argument(
        "--no-data", action="store_true", help="only the sky's records: a site whose inputs are placed from the hub"
    )
    sp.set_defaults(func=cmd_seed_repo)

    sp = sub.add_parser("export-inputs", help="at the hub: manifest of the inputs a site needs for its tracts")
    common(sp, campaign=True, site=True, site_required=True)
    sp.add_argument("--tracts", help="the site's tracts to place inputs for (default: all of them)")
    sp.add_argument("--manifest", required=True, help="output manifest JSON")
    sp.set_defaults(func=cmd_export_inputs)

    sp = sub.add_parser("check-datasets", help="which of a manifest's datasets this Butler holds, with checksums")
    common(sp)
    sp.add_argument("--manifest", required=True)
    sp.set_defaults(func=cmd_check_datasets)

    sp = sub.add_parser("check-inputs", help="count raws per tract; create the input chain")
    common(sp, campaign=True, site=True, site_required=True)
    sp.add_argument("--tracts", help="tracts to check (default: the site's)")
    sp.add_argument("--chain", required=True, help="CHAINED input collection to create if missing")
    sp.add_argument(
        "--overlap-chain", default="", help="the chain of the site's overlap groups, made over --chain if missing"
    )
    sp.add_argument(
        "--chain-only", action="store_true", help="no tracts this run (a hub with none): check nothing, make the chain"
    )
    sp.set_defaults(func=cmd_check_inputs)

    sp = sub.add_parser("run-step", help="run one step's tasks with pipetask")
    common(sp, campaign=True, site=True, site_required=True)
    sp.add_argument("--step", required=True)
    sp.add_argument("--tracts", help="restrict to these tracts (omit for global steps)")
    sp.add_argument("--chain", required=True, help="input CHAINED collection; RUN is prepended to it on success")
    sp.add_argument("--output-run", required=True)
    sp.add_argument(
        "--fail",
        action="append",
        metavar="LABEL:EXPR",
        help="inject a fault: task LABEL raises for data IDs matching EXPR",
    )
    config_option(sp)
    sp.add_argument("--dry-run", action="store_true", help="build the quantum graph only")
    sp.add_argument("-j", "--processes", type=int, default=1, help="pipetask -j")
    sp.set_defaults(func=cmd_run_step)

    sp = sub.add_parser("bps-submit", help="submit one step group with BPS, or find its run (idempotent)")
    common(sp, campaign=True, site=True, site_required=True)
    sp.add_argument("--step", required=True)
    sp.add_argument("--group", required=True, help="work group label, e.g. g000 (or 'global')")
    sp.add_argument("--tracts", help="the group's tracts (omit for global steps)")
    sp.add_argument("--key", required=True, help="campaign run key (names the output RUN)")
    sp.add_argument("--chain", required=True, help="input CHAINED collection; the RUN joins it once clean")
    sp.add_argument("--run-dir", required=True, help="directory of this group's BPS run (record, submit files)")
    sp.add_argument(
        "--fail",
        action="append",
        metavar="LABEL:EXPR",
        help="inject a fault: task LABEL raises for data IDs matching EXPR",
    )
    config_option(sp)
    sp.add_argument(
        "--job-fault", help="inject a fault: 'transient' (the first job dies once, exit 137) or 'slow:SECONDS'"
    )
    sp.set_defaults(func=cmd_bps_submit)

    for name, func, text in (
        ("bps-report", cmd_bps_report, "per-task outcome of the run; chain the RUN(s) when clean"),
        ("bps-restart", cmd_bps_restart, "restart the run's failed part (same RUN)"),
        ("bps-cancel", cmd_bps_cancel, "cancel the run, and confirm it stopped"),
        ("bps-status", cmd_bps_status, "the run's WMS state"),
    ):
        sp = sub.add_parser(name, help=text)
        common(sp, campaign=name in ("bps-report", "bps-restart"))
        sp.add_argument("--run-dir", required=True)
        if name == "bps-report":
            sp.add_argument("--no-chain", action="store_true", help="do not add the RUN(s) to the chain")
            sp.add_argument(
                "--accept-failures",
                action="store_true",
                help="chain the RUN(s) although quanta failed (accepted by the failure rules)",
            )
        sp.set_defaults(func=func)

    sp = sub.add_parser("export-hop", help="write a manifest of datasets to move")
    common(sp)
    sp.add_argument("--collections", required=True, help="RUN name glob patterns, comma-separated")
    sp.add_argument("--dataset-types", required=True, help="comma-separated dataset type names")
    sp.add_argument(
        "--also", action="append", default=[], help="PATTERNS=TYPES: these types from these RUNs too (repeatable)"
    )
    sp.add_argument("--manifest", required=True, help="output manifest JSON")
    sp.set_defaults(func=cmd_export_hop)

    sp = sub.add_parser("ingest-hop", help="verify and ingest replicas described by a manifest")
    common(sp)
    sp.add_argument("--manifest", required=True)
    sp.add_argument("--replica-dir", required=True, help="directory holding the replicas at their manifest relpath")
    sp.add_argument("--chain", default="", help="CHAINED collection the ingested runs are prepended to (none: inputs)")
    sp.add_argument("--not-chained", default="", help="glob of RUNs ingested but kept out of --chain")
    sp.set_defaults(func=cmd_ingest_hop)

    sp = sub.add_parser("forget-datasets", help="drop datasets from the Butler, keep the files (site copy released)")
    common(sp)
    sp.add_argument("--ids", required=True, help="JSON file: list of dataset ids")
    sp.set_defaults(func=cmd_forget_datasets)

    sp = sub.add_parser("count-datasets", help="count datasets per type in matching RUNs")
    common(sp)
    sp.add_argument("--collections", required=True, help="RUN name glob patterns, comma-separated")
    sp.add_argument("--dataset-types", help="comma-separated (default: every registered type with datasets)")
    sp.set_defaults(func=cmd_count_datasets)

    sp = sub.add_parser("software-report", help="this site's stack version and the hash of the expanded pipeline")
    common(sp, campaign=True)
    sp.set_defaults(func=cmd_software_report)

    sp = sub.add_parser("site-qa", help="at the hub: compare each overlap tract's copies from its two sites")
    common(sp, campaign=True)
    sp.add_argument("--key", required=True, help="campaign run key (names the chain and the overlap RUNs)")
    sp.add_argument("--report-dir", required=True, help="where site_qa.json and one PNG per tract are written")
    sp.add_argument("--tracts", help="only these overlap tracts (comma-separated; default: every one in qa.overlap)")
    sp.set_defaults(func=cmd_site_qa)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()
    try:
        result = args.func(args)
    except StacksideError as exc:
        print(f"drp_campaign.stackside {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - unexpected: still one clear line, naming the repo
        where = getattr(args, "repo", None) or getattr(args, "site", None) or ""
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:600]
        print(f"drp_campaign.stackside {args.command}: error ({where}): {msg}", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(result, dict) and args.command != "count-datasets":
        result.setdefault("elapsed_s", round(time.monotonic() - t0, 3))
    text = json.dumps(result, default=str)
    if getattr(args, "result", None):
        out = Path(args.result)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        tmp.replace(out)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # the reader went away; the result file (if any) has it
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
