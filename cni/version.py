"""CNI version negotiation and result conversion (pure).

podnet speaks 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0. Results are built in the
1.1.0 shape and converted *down* to the config's version when printed:

* 1.1.0 -> 1.0.0 drops the 1.1-only fields (interface ``mtu/socketPath/pciID``,
  route ``mtu/advmss/priority/table/scope``);
* 1.0.0 -> 0.3.x/0.4.0 additionally adds ``ips[].version`` ("4" or "6").

A ``prevResult`` is converted *up* to the internal shape (``ips[].version``
dropped) and converted back down on output, so a chained plugin's result
round-trips unchanged at its own version.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from podnet.cni.types import INCOMPATIBLE_VERSION, CniError

SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"
_RANK = {v: i for i, v in enumerate(SUPPORTED)}

# Minimum config version per verb (pkg/skel: CHECK needs 0.4.0, GC/STATUS 1.1.0).
MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

_IF_11_ONLY = ("mtu", "socketPath", "pciID")
_ROUTE_11_ONLY = ("mtu", "advmss", "priority", "table", "scope")


def check(version: str, verb: str) -> None:
    """Raise error 1 if podnet cannot speak ``version`` or ``verb`` is too new for it."""
    if version not in _RANK:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI versions: config is {version!r}, plugin supports {list(SUPPORTED)}",
        )
    need = MIN_VERSION.get(verb)
    if need and _RANK[version] < _RANK[need]:
        raise CniError(INCOMPATIBLE_VERSION, f"config version {version} does not allow {verb} (needs >= {need})")


def version_info() -> dict[str, Any]:
    return {"cniVersion": CURRENT, "supportedVersions": list(SUPPORTED)}


def upgrade(result: dict[str, Any]) -> dict[str, Any]:
    """A result of any supported version in the internal (1.1) shape."""
    out = dict(result)
    out["ips"] = [{k: v for k, v in ip.items() if k != "version"} for ip in result.get("ips") or []]
    return out


def convert(result: dict[str, Any], version: str) -> dict[str, Any]:
    """Convert an internal 1.1-shaped result down to ``version`` (one of SUPPORTED)."""
    out = dict(result)
    out["cniVersion"] = version
    if version == "1.1.0":
        return out
    out["interfaces"] = [{k: v for k, v in i.items() if k not in _IF_11_ONLY} for i in result.get("interfaces") or []]
    out["routes"] = [{k: v for k, v in r.items() if k not in _ROUTE_11_ONLY} for r in result.get("routes") or []]
    if version == "1.0.0":
        return out
    ips = []
    for ip in result.get("ips") or []:
        fam = ipaddress.ip_interface(ip["address"]).version
        ips.append({"version": str(fam), **ip})
    out["ips"] = ips
    return out
