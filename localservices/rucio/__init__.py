"""A real, local Rucio 41 server for the demo and the tests (runs inside `.venvs/rucio`).

What `scripts/rucio-server.sh start` brings up, all on 127.0.0.1:

* the `rucio` server package (41.x) in its own environment `$DRP_RUCIO_PREFIX` (.venvs/rucio;
  SQLAlchemy 2.0 and psycopg 3, which the controller environment must not have);
* its database `$DRP_RUCIO_DB` on the local PostgreSQL, built the way Rucio's own
  `tools/bootstrap.py` does it (`build_database`, `create_base_vo`, `create_root_account`), then
  filled by `bootstrap.py`: the controller account, RSEs, protocols, distances, quotas, scopes;
* the REST API under gunicorn on `http://127.0.0.1:$DRP_RUCIO_PORT`;
* Rucio's own daemons (judge-evaluator, conveyor-submitter, -poller, -finisher, reaper), run
  in-process by `daemons.py`, with `transfertool.LocalTransfertool` ("local") doing what FTS does
  at a data facility: it copies the file between the two file-protocol RSEs and verifies size and
  adler32 against what Rucio registered; FTS itself cannot run here.

Everything mutable lives under `$DRP_WORK_DIR/rucio/` (configs, secrets, logs, pids, transfer
results); see `config.LocalRucio` for the exact files.

RSEs, and how a DID maps to a file (the lfn2pfn mapping)
-------------------------------------------------------
Each site in configs/sites.yaml gives one disk RSE (`rucio.disk_rse`) and maybe a tape RSE
(`rucio.tape_rse`). All are deterministic, protocol `file` (rucio.rse.protocols.posix.Default,
hostname "", port 0) and use the lfn2pfn algorithm `drp_relpath` (`lfn2pfn.py`):

* disk RSE of site S: prefix = the site's Butler repo root, `$DRP_WORK_DIR/repos/<S>` (the
  `butler_repo` of sites.yaml, expanded), and

      (scope, name)  ->  file://:0<prefix>/<name>   i.e. the file  <repo root of S>/<name>

  The scope is NOT part of the path. So a file the site's Butler wrote at
  `$DRP_WORK_DIR/repos/<S>/<relpath>` (relpath = its path inside the datastore, whose root is the
  repo root) is registered in place as the replica (scope=<campaign>, name=<relpath>) at S's disk
  RSE, exactly as lsst-rucio-register does (datastore root = RSE prefix, DID name = path in the
  datastore). A rule to another site's disk RSE makes the copy land at
  `<destination repo root>/<name>`: the same relative path in the destination repo.
  A name may contain `/`, must match `^[/A-Za-z0-9][/A-Za-z0-9\\.\\-_]*$` and be at most 250
  characters (Rucio's generic schema).
* tape RSE (USDF_TAPE, rse_type TAPE): prefix = `$DRP_WORK_DIR/rse/<RSE>`, same algorithm, so the
  file is `$DRP_WORK_DIR/rse/USDF_TAPE/<name>`.
* IDAC RSE (sites.yaml `idacs`, e.g. IDAC_UK_DISK, rse_type DISK): an IDAC has no Butler repo
  here, so its prefix is a plain directory, `$DRP_WORK_DIR/rse/<RSE>`. Products reach it from the
  hub only: its one distance is from the hub's disk RSE, so Rucio picks no other source (not a
  site's copy being released) and copies nothing out of it.

`$DRP_WORK_DIR/rse/<site's DISK RSE>` is a symlink to the site's repo root, for people looking
around.

Accounts and quotas: `root` (bootstrap) and the controller's account `drp` (SERVICE, `admin`
attribute, userpass identity `drp`), with a local account limit on each disk RSE of
`storage_tb` x 10^12 bytes from sites.yaml (unlimited on tape); the RSE's storage usage total is
set to the same number so the reaper knows the capacity. One scope per campaign
(configs/campaigns/*.yaml `name`), owned by `drp`.

This `__init__` must not import rucio: the controller environment (rucio-clients only) may import
it to learn the layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drp_campaign import settings

__all__ = ["CONTROLLER_ACCOUNT", "LFN2PFN_ALGORITHM", "RseSpec", "campaign_scopes", "rse_specs"]

CONTROLLER_ACCOUNT = "drp"
LFN2PFN_ALGORITHM = "drp_relpath"
TRANSFERTOOL_NAME = "local"
TB = 10**12


@dataclass(frozen=True)
class RseSpec:
    name: str
    site: str
    rse_type: str  # "DISK" or "TAPE"
    prefix: Path  # the directory a DID name is relative to
    quota_bytes: int  # local account limit for the controller account; -1 = unlimited
    # The only RSEs with a distance to this one, and none from it (an IDAC: the hub's disk);
    # None: distances to and from every RSE.
    sources: tuple[str, ...] | None = None


def rse_specs(sites_file: str | Path | None = None) -> list[RseSpec]:
    """The RSEs of the sites file (sites' and IDACs'), with their directories (see the module
    docstring)."""
    from drp_campaign.config import load_sites

    sites = load_sites(sites_file)
    specs: list[RseSpec] = []
    for site in sites.sites.values():
        specs.append(
            RseSpec(
                site.rucio.disk_rse,
                site.name,
                "DISK",
                settings.expand(site.butler_repo).resolve(),
                int(site.storage_tb * TB),
            )
        )
        if site.rucio.tape_rse:
            specs.append(
                RseSpec(site.rucio.tape_rse, site.name, "TAPE", settings.work_dir() / "rse" / site.rucio.tape_rse, -1)
            )
    hub_disk = sites.sites[sites.hub].rucio.disk_rse
    for idac in sites.idacs.values():
        specs.append(
            RseSpec(
                idac.rse,
                idac.name,
                "DISK",
                settings.work_dir() / "rse" / idac.rse,
                int(idac.storage_tb * TB),
                sources=(hub_disk,),
            )
        )
    return specs


def campaign_scopes(campaigns_dir: str | Path | None = None) -> list[str]:
    """One scope per campaign file: its `name` (read without the full campaign validation)."""
    import yaml

    from drp_campaign.config import find_campaign_files

    names = []
    for path in find_campaign_files(Path(campaigns_dir) if campaigns_dir else None):
        doc = yaml.safe_load(path.read_text()) or {}
        if isinstance(doc, dict) and isinstance(doc.get("name"), str):
            names.append(doc["name"])
    return sorted(set(names))
