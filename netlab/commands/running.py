"""A running lab and an admin API client to it, for the verbs that read one (``draw``, ``rbac-report``)."""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

__all__ = ["running_lab"]


@asynccontextmanager
async def running_lab(lab: str, args: argparse.Namespace) -> AsyncIterator[tuple[Any, Any, Any]]:
    """(state, plan, client) of the lab named ``lab``; LookupError (one line for the user) when none runs."""
    from podnet.kube.client import ApiClient
    from podnet.netlab.lab import labstate
    from podnet.netlab.lab.progress import quiet_api_discovery

    st = labstate.load(lab)
    if st is None:
        raise LookupError(f"no running lab {lab!r} (no /run/podnet/{lab}/lab.json); start one with podnet lab up")
    quiet_api_discovery(args)
    plan = st.plan()
    async with ApiClient.from_flags(master=st.local_master, kubeconfig=str(plan.run_dir / "kubeconfig")) as client:
        yield st, plan, client
