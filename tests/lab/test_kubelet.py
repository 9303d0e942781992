"""The lab kubelet's reconcile logic, with the runtime side (netns, CNI, processes, API writes) faked."""

from __future__ import annotations

import asyncio

import pytest

from podnet.netlab.kubelet import Kubelet
from podnet.netlab.sandbox import Sandbox


class FakeKubelet(Kubelet):
    """Records runtime operations instead of creating namespaces and processes."""

    def __init__(self, tmp_path, fail_start: bool = False) -> None:
        super().__init__(None, "n1", "192.168.77.11", lab="t", run_dir=tmp_path, cni_bin_dir="", cni_conf_dir=tmp_path)
        self.ops: list[tuple] = []
        self.fail_start = fail_start

    async def start_pod(self, pod):
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        self.ops.append(("start", key, meta["uid"]))
        self.pods[key] = Sandbox(key, meta["uid"], self._netns_name(), "c")
        await asyncio.sleep(0)
        if self.fail_start:
            raise RuntimeError("CNI ADD failed")

    async def stop_pod(self, key):
        rp = self.pods.pop(key, None)
        if rp is not None:
            self.ops.append(("stop", key, rp.uid))
            self.used_index.discard(int(rp.netns.rsplit("-p", 1)[1]))
        await asyncio.sleep(0)

    async def _confirm_delete(self, pod):
        self.ops.append(("confirm", pod["metadata"]["name"]))

    async def _patch_status(self, ns, name, status):
        self.ops.append(("status", name, status.get("phase")))


def pod(name: str, uid: str, node: str = "n1", deleting: bool = False) -> dict:
    meta = {"namespace": "default", "name": name, "uid": uid}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node}}


async def settle(k: Kubelet) -> None:
    for _ in range(100):
        await asyncio.sleep(0)
        if not k.tasks:
            return
    raise AssertionError("workers did not settle")


A = "default/a"
CASES = [
    ("add", [pod("a", "u1")], [("start", A, "u1")]),
    ("update-same-uid", [pod("a", "u1"), "settle", pod("a", "u1")], [("start", A, "u1")]),
    ("delete", [pod("a", "u1"), "settle", None], [("start", A, "u1"), ("stop", A, "u1")]),
    ("recreated-new-uid", [pod("a", "u1"), "settle", pod("a", "u2")],
     [("start", A, "u1"), ("stop", A, "u1"), ("start", A, "u2")]),
    ("graceful-delete", [pod("a", "u1"), "settle", pod("a", "u1", deleting=True), "settle", None],
     [("start", A, "u1"), ("stop", A, "u1"), ("confirm", "a")]),
    ("add-then-delete-before-start", [pod("a", "u1"), None], []),
    ("delete-during-start", [pod("a", "u1"), "tick", None], [("start", A, "u1"), ("stop", A, "u1")]),
]


@pytest.mark.parametrize("events,want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_reconcile(tmp_path, events, want):
    k = FakeKubelet(tmp_path)
    for ev in events:
        if ev == "settle":
            await settle(k)
        elif ev == "tick":
            await asyncio.sleep(0)
        else:
            k._observe(ev, A)
    await settle(k)
    assert k.ops == want


async def test_failed_start_is_reported_once_and_not_retried(tmp_path):
    k = FakeKubelet(tmp_path, fail_start=True)
    k._observe(pod("a", "u1"), A)
    await settle(k)
    assert k.ops == [("start", A, "u1"), ("status", "a", "Failed")]
    k._observe(pod("a", "u1"), A)  # a later no-op update does not retry
    await settle(k)
    assert k.ops == [("start", A, "u1"), ("status", "a", "Failed")]


async def test_netns_index_is_lowest_free(tmp_path):
    k = FakeKubelet(tmp_path)
    for name in ("a", "b", "c"):
        k._observe(pod(name, name), f"default/{name}")
    await settle(k)
    assert sorted(rp.netns for rp in k.pods.values()) == ["pnl-n1-p1", "pnl-n1-p2", "pnl-n1-p3"]
    k._observe(None, "default/b")
    await settle(k)
    k._observe(pod("d", "d"), "default/d")
    await settle(k)
    assert k.pods["default/d"].netns == "pnl-n1-p2"


def test_only_pods_bound_to_this_node_are_mine(tmp_path):
    k = FakeKubelet(tmp_path)
    assert k._mine(pod("a", "u", node="n1")) and not k._mine(pod("a", "u", node="n2"))
    assert not k._mine({"metadata": {"name": "x"}, "spec": {}})
