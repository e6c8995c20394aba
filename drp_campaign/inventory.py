"""Where a campaign run's data is now, read from Rucio and each site's Butler, not from the ledger.

`drp-campaign inventory` lets anyone holding the campaign file and a Rucio account check a run from
outside Airflow. Rucio says what each hop moved: its dataset DIDs (`{scope}:{run key}/{hop}/{X}`,
named and parsed by drp_campaign/hops.py) and their manifests. The hop's direction says where
the copies belong (hops.py): the hub (fan_in), every other site of the run (fan_out), the site X
(place), the hub's tape RSE and the hop's IDACs (to_tape). Every other copy Rucio holds of a dataset is
listed as well, and counts in the balance like any other: the source's (registered there in place,
as a fan-in site's outputs stay held until the hop's lifetime ends, or the hub's inputs and
products) and any an RSE holds under a rule of ours. Replicas of the run's files that no copy of
the run lists (another run placed the same inputs) are named in a note. Each copy's holder then
says what it holds:

- a site: its own Butler, through the site's setup command (`check-datasets`): present = in the
  registry, verified = its file has the manifest's size and adler32 (a calibration is certified);
- a tape or IDAC RSE has no Butler: present = verified = an AVAILABLE replica of the manifest's
  size (Rucio checked adler32 on the transfer).

A copy Rucio was told to let go (our rule there purges with an expiry, or is gone already, as after
the tape hop releases the sites' copies) is shown as released, and not as missing.
"""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

from . import settings
from .config import CampaignConfig, SiteConfig
from .errors import DrpError
from .graph import run_key
from .hops import (
    archive_rses,
    dataset_destinations,
    dataset_source,
    hop_dataset_did,
    hop_dataset_name,
    parse_hop_dataset_name,
    way,
)
from .transfer.base import Manifest, ManifestEntry
from .transfer.rucio import RucioTransferService, available, rucio_client

State = Literal["ok", "missing", "released"]
NOTES_PER_COPY = 5  # check-datasets problems shown per copy; the counts say how many in all


class UnknownRun(DrpError):
    """The run asked for has no datasets in Rucio (the message lists the runs it has)."""


class BadConnectionFile(DrpError):
    """The Rucio connection file given (or the local default) cannot be read."""


class RucioUnreachable(DrpError):
    """Rucio refused or did not answer the client made from the connection settings."""


# --- reaching Rucio from outside Airflow -------------------------------------------------------


def default_connection_file() -> Path:
    """What the local bootstrap writes ($DRP_WORK_DIR/rucio/connection.json); the same fields an
    Airflow Connection `rucio_default` holds."""
    return settings.local_rucio_home() / "connection.json"


def read_connection(path: Path | None = None) -> tuple[Path, dict]:
    """The connection fields (rucio_host, auth_host, account, auth_type, username, password, vo)."""
    path = Path(path) if path else default_connection_file()
    try:
        fields = json.loads(path.read_text())
        if not isinstance(fields, dict) or not fields.get("rucio_host") or not fields.get("account"):
            raise ValueError("it needs at least rucio_host and account")
        return path, fields
    except (OSError, ValueError) as exc:
        raise BadConnectionFile(
            f"cannot read the Rucio connection file {path} ({exc}): start the local Rucio "
            "(scripts/rucio-server.sh start) or pass --rucio-connection FILE with rucio_host, "
            "account, auth_type, username, password"
        ) from None


def inventory_from(campaign: CampaignConfig, connection_file: Path | None = None, run: str | None = None) -> Inventory:
    """`collect` with a client (transfer/rucio.py `rucio_client`) made from the connection file;
    a failure of Rucio itself, at any call, is named with the server and where its settings came from."""
    from rucio.common.exception import RucioException

    path, fields = read_connection(connection_file)
    try:
        return collect(campaign, rucio_client(fields), run)
    except RucioException as exc:
        why = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise RucioUnreachable(
            f"cannot reach Rucio at {fields.get('rucio_host')} as {fields.get('account')} or it "
            f"refused: {why} (settings from {path})"
        ) from None


# --- what Rucio holds for the campaign ---------------------------------------------------------


@dataclass(frozen=True)
class HopDataset:
    """One hop dataset DID of a run: `{run_key}/{hop}/{end}` in the campaign's scope."""

    run_key: str
    hop: str
    end: str  # the source site (fan_in), the hub (fan_out, to_tape), the destination site (place)
    created_at: datetime | None

    @property
    def name(self) -> str:
        return hop_dataset_name(self.run_key, self.hop, self.end)


def hop_datasets(client, campaign: CampaignConfig) -> list[HopDataset]:
    """Every hop dataset of the campaign's scope, with when Rucio made it."""
    scope = campaign.name
    mine = [
        (n, parsed)
        for n in client.list_dids(scope, [{"name": "*"}], did_type="dataset")
        if (parsed := parse_hop_dataset_name(n)) and parsed.hop in campaign.hops
    ]
    names = [n for n, _ in mine]
    created: dict[str, datetime] = {}
    for i in range(0, len(names), 500):
        for meta in client.get_metadata_bulk([{"scope": scope, "name": n} for n in names[i : i + 500]]):
            created[meta["name"]] = meta.get("created_at")
    return [HopDataset(*parsed, created_at=created.get(n)) for n, parsed in mine]


def runs_known(datasets: list[HopDataset]) -> list[tuple[str, datetime | None]]:
    """(run key, when its first dataset was made), newest first."""
    first: dict[str, datetime | None] = {}
    for d in datasets:
        if d.run_key not in first or (d.created_at and (first[d.run_key] is None or d.created_at < first[d.run_key])):
            first[d.run_key] = d.created_at
    return sorted(first.items(), key=lambda kv: (kv[1] or datetime.min, kv[0]), reverse=True)


def choose_run(campaign: CampaignConfig, datasets: list[HopDataset], run: str | None) -> str:
    """The run key asked for (an Airflow run id or its key), or the newest Rucio knows."""
    known = runs_known(datasets)
    if not known:
        raise UnknownRun(
            f"Rucio has no hop datasets in scope {campaign.name}: no run of campaign {campaign.name} "
            "has registered data yet"
        )
    if run is None:
        return known[0][0]
    key = run_key(run)
    if key not in {k for k, _ in known}:
        listed = "\n".join(
            f"  {k}  (first dataset {when:%Y-%m-%d %H:%M:%S} UTC)" if when else f"  {k}" for k, when in known
        )
        raise UnknownRun(
            f"Rucio has no datasets of run {key} in scope {campaign.name}; the runs it knows, newest first:\n{listed}"
        )
    return key


# --- where copies belong -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # each copy is its own (a dict key); SiteConfig is not hashable
class Copy:
    """Where one hop dataset should be held: a site (its Butler checks it) or an RSE with none."""

    dataset: HopDataset
    where: str  # the row label: a site name, or an RSE (tape, IDAC)
    rse: str
    site: SiteConfig | None  # None: no Butler there
    released: bool = False


def _site_copy(campaign: CampaignConfig, dataset: HopDataset, site: str) -> Copy:
    cfg = campaign.sites_config.sites[site]
    return Copy(dataset, site, cfg.rucio.disk_rse, cfg)


def expected_copies(campaign: CampaignConfig, datasets: list[HopDataset]) -> list[Copy]:
    """Each dataset's destinations, by its hop's direction. The run's sites are the hub and those
    that sent (fan_in) or were sent inputs (place); with neither, every campaign site."""
    hub = campaign.hub()
    in_run = {hub} | {d.end for d in datasets if way(campaign.hops[d.hop].direction).names_site}
    others = [s for s in campaign.campaign_sites() if s != hub and (s in in_run or in_run == {hub})]
    copies = []
    for d in datasets:
        if way(campaign.hops[d.hop].direction).to_tape:
            copies += [Copy(d, rse, rse, None) for rse in archive_rses(campaign, d.hop) if rse]
        else:
            copies += [_site_copy(campaign, d, s) for s in dataset_destinations(campaign, d.hop, d.end, others)]
    return copies


def released_rses(client, scope: str, name: str, current: list[dict]) -> set[str]:
    """RSEs where our copy of a dataset was let go: our rule there purges with an expiry (a
    release), or is gone (Rucio's rule history has it, its rule list, CURRENT, no more), and no
    other rule of ours holds the copy."""
    me = client.account
    letting_go = {r["rse_expression"] for r in current if r["purge_replicas"] and r["expires_at"]}
    holding = {r["rse_expression"] for r in current} - letting_go
    ids = {r["id"] for r in current}
    gone = {
        h["rse_expression"]
        for h in client.list_replication_rule_full_history(scope, name)
        if h["account"] == me and h["rule_id"] not in ids
    }
    return (letting_go | gone) - holding


def source_rse(campaign: CampaignConfig, dataset: HopDataset) -> str:
    """Where the hop registered the dataset's files in place: the sending site's disk RSE."""
    return campaign.sites_config.sites[dataset_source(campaign, dataset.hop, dataset.end)].rucio.disk_rse


def with_held_and_released(
    campaign: CampaignConfig,
    client,
    copies: list[Copy],
    datasets: list[HopDataset],
    replicas: dict[HopDataset, dict[str, dict]],
) -> list[Copy]:
    """Mark released copies, and add every other copy Rucio holds of each dataset, where it holds
    one because of that dataset: at its source (a fan-in site's copy stays, held by a rule that
    expires with the hop's lifetime; the hub's inputs and products stay), where one of our rules
    asks for one, or released where no copy was expected (a site's own copy of what it sent in a
    fan-in, let go after the tape hop). REPLICAS: each dataset's replicas, {rse: {name: ...}}."""
    by_rse = {cfg.rucio.disk_rse: name for name, cfg in campaign.sites_config.sites.items()}
    out = []
    for d in datasets:
        rules = [r for r in client.list_did_rules(campaign.name, d.name) if r["account"] == client.account]
        released = released_rses(client, campaign.name, d.name, rules)
        expected = [c for c in copies if c.dataset == d]
        out += [replace(c, released=c.rse in released) for c in expected]
        held = {r["rse_expression"] for r in rules} | ({source_rse(campaign, d)} & set(replicas[d]))
        for rse in sorted((held | released) - {c.rse for c in expected}):
            site = by_rse.get(rse)
            copy = _site_copy(campaign, d, site) if site else Copy(d, rse, rse, None)
            out.append(replace(copy, released=rse in released))
    return out


def unaccounted(
    copies: list[Copy], manifests: dict[HopDataset, Manifest], replicas: dict[HopDataset, dict[str, dict]]
) -> list[str]:
    """A line per (hop, RSE) where Rucio holds files of the run's datasets that no copy of the run
    lists (held there for another run or dataset, e.g. inputs placed for an earlier run)."""
    listed = {(e.relpath, c.rse) for c in copies for e in manifests[c.dataset].entries}
    counts: dict[tuple[str, str], int] = {}
    for d, by_rse in replicas.items():
        for rse, names in by_rse.items():
            extra = sum((name, rse) not in listed for name in names)
            if extra:
                counts[(d.hop, rse)] = counts.get((d.hop, rse), 0) + extra
    why = "which no copy of this run lists (held for another run or dataset)"
    return [f"Rucio also holds {n} files of {hop} at {rse}, {why}" for (hop, rse), n in sorted(counts.items())]


# --- what each destination holds ---------------------------------------------------------------


@dataclass
class InventoryRow:
    site_or_rse: str
    hop: str
    dataset_type: str
    expected: int = 0
    present: int = 0
    verified: int = 0
    bytes_expected: int = 0
    bytes_present: int = 0
    bytes_verified: int = 0
    rucio_available: int = 0
    state: State = "ok"

    @property
    def balanced(self) -> bool:
        return self.state != "missing"


@dataclass
class Inventory:
    campaign: str
    run_key: str
    rows: list[InventoryRow]
    notes: list[str] = field(default_factory=list)
    hops_not_registered: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return all(r.balanced for r in self.rows)

    def to_dict(self) -> dict:
        return {
            "campaign": self.campaign,
            "run_key": self.run_key,
            "balanced": self.balanced,
            "rows": [asdict(r) for r in self.rows],
            "notes": self.notes,
            "hops_not_registered": self.hops_not_registered,
        }


def check_butler(site: SiteConfig, manifest: Manifest) -> dict:
    """`check-datasets` at the site, through its setup command (as campaign_commands.seed runs)."""
    from .stack import run_stack

    with tempfile.TemporaryDirectory(prefix="drp-inventory-") as tmp:
        path = Path(tmp) / "manifest.json"
        manifest.write(path)
        return run_stack(
            site,
            "check-datasets",
            ["--repo", str(site.butler_repo_path()), "--manifest", str(path)],
            log=lambda line: None,
        )


def _rows(
    copy: Copy, entries: list[ManifestEntry], available: dict[str, int], butler: dict | None, order: list[str]
) -> list[InventoryRow]:
    rows: dict[str, InventoryRow] = {}
    for e in sorted(
        entries, key=lambda e: (order.index(e.dataset_type) if e.dataset_type in order else len(order), e.dataset_type)
    ):
        row = rows.setdefault(e.dataset_type, InventoryRow(copy.where, copy.dataset.hop, e.dataset_type))
        row.expected += 1
        row.bytes_expected += e.bytes
        row.rucio_available += e.relpath in available
        if butler is None and not copy.released and available.get(e.relpath) == e.bytes:  # no Butler: Rucio's word
            row.present += 1
            row.verified += 1
            row.bytes_present += e.bytes
            row.bytes_verified += e.bytes
    for row in rows.values():
        if butler is not None:
            held = butler["by_type"].get(row.dataset_type, {})
            for key in ("present", "verified", "bytes_present", "bytes_verified"):
                setattr(row, key, int(held.get(key, 0)))
        full = (row.verified, row.bytes_verified) == (row.expected, row.bytes_expected)
        row.state = "released" if copy.released else "ok" if full else "missing"
    return list(rows.values())


def collect(campaign: CampaignConfig, client, run: str | None = None, workers: int = 4) -> Inventory:
    """The inventory of one run (default: the newest Rucio knows); UnknownRun if it has none."""
    datasets = hop_datasets(client, campaign)
    key = choose_run(campaign, datasets, run)
    mine = [d for d in datasets if d.run_key == key]
    service = RucioTransferService(client)
    dids = {d: hop_dataset_did(campaign, d.run_key, d.hop, d.end) for d in mine}
    manifests = {d: service.manifest(dids[d]) for d in mine}
    replicas = {d: service.replica_states(dids[d]) for d in mine}  # at every RSE
    copies = with_held_and_released(campaign, client, expected_copies(campaign, mine), mine, replicas)
    at_rse = {c: available(replicas[c.dataset].get(c.rse, {})) for c in copies}
    to_check = [c for c in copies if c.site is not None and not c.released and manifests[c.dataset].entries]

    def butler_of(c: Copy) -> dict | str:
        try:
            return check_butler(c.site, manifests[c.dataset])
        except DrpError as exc:  # the site's Butler cannot be read: nothing there counts as held
            return str(exc)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # each check is a stack process
        checked = dict(zip(to_check, pool.map(butler_of, to_check)))
    notes = unaccounted(copies, manifests, replicas)
    rows: list[InventoryRow] = []
    for c in _ordered(campaign, copies):
        result = checked.get(c)
        if isinstance(result, str):
            notes.append(f"{c.where} {c.dataset.hop}: the Butler could not be checked: {result.splitlines()[0]}")
            result = {"by_type": {}}
        elif result and result.get("problem_count"):
            shown = result["problems"][:NOTES_PER_COPY]
            more = result["problem_count"] - len(shown)
            notes += [f"{c.where} {c.dataset.hop}: {p}" for p in shown] + (
                [f"{c.where} {c.dataset.hop}: ... and {more} more"] if more > 0 else []
            )
        butler = result if c.site is not None and not c.released else None
        order = list(campaign.hops[c.dataset.hop].dataset_types)
        rows += _rows(c, manifests[c.dataset].entries, at_rse[c], butler, order)
    registered = {d.hop for d in mine}
    return Inventory(campaign.name, key, _merged(rows), notes, [h for h in campaign.hops if h not in registered])


def _merged(rows: list[InventoryRow]) -> list[InventoryRow]:
    """One row per (destination, hop, dataset type): a fan-in brings one dataset per source site
    to the hub. Missing anywhere is missing; released only if every part was released."""
    out: dict[tuple[str, str, str], InventoryRow] = {}
    for r in rows:
        key = (r.site_or_rse, r.hop, r.dataset_type)
        if key not in out:
            out[key] = replace(r)
            continue
        row = out[key]
        for attr in COUNTS:
            setattr(row, attr, getattr(row, attr) + getattr(r, attr))
        row.state = (
            "missing"
            if "missing" in (row.state, r.state)
            else "released"
            if row.state == r.state == "released"
            else "ok"
        )
    return list(out.values())


def _ordered(campaign: CampaignConfig, copies: list[Copy]) -> list[Copy]:
    """Hub first, then the other sites in campaign order, then RSEs; hops in campaign order."""
    sites = [campaign.hub(), *[s for s in campaign.campaign_sites() if s != campaign.hub()]]
    hops = list(campaign.hops)

    def rank(c: Copy):
        return (
            sites.index(c.where) if c.where in sites else len(sites),
            c.where,
            hops.index(c.dataset.hop),
            c.dataset.end,
        )

    return sorted(copies, key=rank)


# --- the table ---------------------------------------------------------------------------------

COLUMNS = [
    ("where", "site_or_rse"),
    ("hop", "hop"),
    ("dataset type", "dataset_type"),
    ("expected", "expected"),
    ("present", "present"),
    ("verified", "verified"),
    ("in Rucio", "rucio_available"),
    ("bytes expected", "bytes_expected"),
    ("bytes present", "bytes_present"),
    ("bytes verified", "bytes_verified"),
    ("state", "state"),
]
COUNTS = ("expected", "present", "verified", "rucio_available", "bytes_expected", "bytes_present", "bytes_verified")


def _total(where: str, rows: list[InventoryRow]) -> InventoryRow:
    total = InventoryRow(where, "total", "")
    for key in COUNTS:
        setattr(total, key, sum(getattr(r, key) for r in rows))
    states = {r.state for r in rows}
    total.state = "missing" if "missing" in states else "released" if states == {"released"} else "ok"
    return total


def format_inventory(inv: Inventory) -> str:
    """Aligned columns, a total per destination, the notes, and a verdict naming what is short."""
    lines: list[list[str]] = []
    for where in dict.fromkeys(r.site_or_rse for r in inv.rows):
        mine = [r for r in inv.rows if r.site_or_rse == where]
        lines += [[str(getattr(r, attr)) for _, attr in COLUMNS] for r in [*mine, _total(where, mine)]]
    header = [title for title, _ in COLUMNS]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    numeric = {i for i, (_, attr) in enumerate(COLUMNS) if attr in COUNTS}

    def fmt(cells: list[str]) -> str:
        return (
            "  "
            + "  ".join(
                c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()
        )

    out = [
        f"Inventory of campaign {inv.campaign}, run {inv.run_key} "
        f"(from Rucio scope {inv.campaign} and each site's Butler):",
        fmt(header),
    ]
    for cells in lines:
        out.append(fmt(cells))
        if cells[1] == "total":
            out.append("")
    if not inv.rows:
        out.append("  (no hop dataset of this run has files yet)")
    if inv.hops_not_registered:
        out.append(f"Hops with nothing registered in Rucio for this run: {', '.join(inv.hops_not_registered)}")
    out += [f"  note: {n}" for n in inv.notes]
    released = sorted({f"{r.site_or_rse} {r.hop}" for r in inv.rows if r.state == "released"})
    if inv.balanced:
        extra = f" (released, as asked: {', '.join(released)})" if released else ""
        out.append(f"BALANCED: every copy Rucio expects is present and verified where it belongs{extra}")
    else:
        short = [
            f"{r.site_or_rse} {r.hop} {r.dataset_type}: {r.verified} of {r.expected} verified "
            f"({r.expected - r.verified} missing or damaged, {r.bytes_expected - r.bytes_verified} B)"
            for r in inv.rows
            if not r.balanced
        ]
        out.append("NOT BALANCED: " + "; ".join(short))
    return "\n".join(out)
