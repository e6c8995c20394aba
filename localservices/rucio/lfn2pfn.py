"""The `drp_relpath` lfn2pfn algorithm: a DID's path on an RSE is its name, without the scope.

Loaded by Rucio itself through rucio.cfg `[policy] lfn2pfn_module =
localservices.rucio.lfn2pfn` (rucio.rse.translation imports the module when it initialises),
in the REST server and in the daemons alike. RSEs select it with the attribute
`lfn2pfn_algorithm = drp_relpath`.

    (scope, name) -> <protocol prefix>/<name>

With the prefix of a site's disk RSE at its Butler repo root, the DID name is the file's path in
the Butler datastore (see the package docstring). Clients that do not have this module (the
controller's rucio-clients) ask the server for PFNs, which rucio-clients does by itself for an
algorithm it does not know.
"""

from __future__ import annotations

from typing import Any

from rucio.rse.translation import RSEDeterministicTranslation

from localservices.rucio import LFN2PFN_ALGORITHM


def drp_relpath(scope: str, name: str, rse: str, rse_attrs: dict[str, Any], protocol_attrs: dict[str, Any]) -> str:
    del scope, rse, rse_attrs, protocol_attrs
    # Never let a name escape the RSE prefix or alias another file ("a//b", "/a", "./a").
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"DID name {name!r} is not a clean relative path (no leading /, //, . or ..)")
    return name


RSEDeterministicTranslation.register(drp_relpath, LFN2PFN_ALGORITHM)
