"""Hostile objects among good ones: each is skipped and counted, the informer keeps the rest and goes on.

The hostile objects are written into the lab's store behind the registry's back (the registry
refuses them with 422), so the informer's own boundary is what is tested, in the initial list and
in the watch stream.
"""

from __future__ import annotations

import asyncio

import pytest

from podnet.kube import resources as r
from podnet.kube.informer import Informer


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _svc(name, **spec):
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}], **spec}}


HOSTILE_SERVICES = [
    pytest.param(_svc("zone", clusterIP="fd00:96::77%x", clusterIPs=["fd00:96::77%x"]), id="cluster-ip-zone"),
    pytest.param(_svc("x\n"), id="name-x-newline"),
    pytest.param(_svc("port", ports=[{"name": "http\n", "port": 80}]), id="port-name-http-newline"),
    pytest.param(_svc("ext", type="ExternalName", externalName="evil.com\n"), id="external-name-newline"),
    pytest.param(_svc("meta", externalIPs=["169.254.169.254"]), id="external-ip-metadata-service"),
    pytest.param(_svc("lbr", type="LoadBalancer", loadBalancerSourceRanges=["fd00::%1\n-A PODNET-SERVICES -j ACCEPT"]),
                 id="source-range-line-injection"),
]


@pytest.mark.parametrize("hostile", HOSTILE_SERVICES)
async def test_one_hostile_service_among_good_ones(lab_api, client, h, hostile):
    for name in ("a", "b"):
        await client.create(r.SERVICES, _svc(name), namespace="default")
    lab_api.store.create("services", hostile)  # present in the initial list
    rec = h.Recorder()
    inf = Informer(client, r.SERVICES)
    inf.add_handler(**rec.handlers())
    before = r.REJECTED.labels("services")._value.get()
    task = asyncio.create_task(inf.run())
    try:
        await asyncio.wait_for(inf.wait_synced(), 10)
        assert sorted(inf.keys()) == ["default/a", "default/b"]
        assert r.REJECTED.labels("services")._value.get() == before + 1
        # Through the watch: the hostile object again (a modification), then a good one after it.
        name = hostile["metadata"]["name"]
        stored = next(o for o in lab_api.store.items("services") if o["metadata"]["name"] == name)
        lab_api.store.update("services", {**stored, "metadata": {**stored["metadata"], "labels": {"v": "2"}}})
        await client.create(r.SERVICES, _svc("c"), namespace="default")
        await h.wait_for(lambda: inf.get("default/c") is not None)
        assert sorted(inf.keys()) == ["default/a", "default/b", "default/c"]
        assert r.REJECTED.labels("services")._value.get() == before + 2
        assert not task.done()
    finally:
        await _stop(task)


async def test_hostile_endpoint_slices_among_good_ones(lab_api, client, h):
    def eps(name, address, **extra):
        return {"metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "endpoints": [{"addresses": [address], **extra}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}

    await client.create(r.ENDPOINT_SLICES, eps("good-1", "10.244.1.5"), namespace="default")
    hostile = [eps(f"bad-{i}", a) for i, a in enumerate(
        ["0.0.0.0", "127.0.0.1", "169.254.169.254", "224.0.0.1", "10.244.1.6\n", "010.244.1.6", "::ffff:10.244.1.6"])]
    hostile += [eps("bad-host", "10.244.1.7", hostname="web\n"), eps("bad-zone", "10.244.1.8", zone="z\n")]
    for obj in hostile:
        lab_api.store.create("endpointslices", obj)
    await client.create(r.ENDPOINT_SLICES, eps("good-2", "10.244.2.5"), namespace="default")
    inf = Informer(client, r.ENDPOINT_SLICES)
    before = r.REJECTED.labels("endpointslices")._value.get()
    task = asyncio.create_task(inf.run())
    try:
        await asyncio.wait_for(inf.wait_synced(), 10)
        assert sorted(inf.keys()) == ["default/good-1", "default/good-2"]
        assert r.REJECTED.labels("endpointslices")._value.get() == before + len(hostile)
        await client.create(r.ENDPOINT_SLICES, eps("good-3", "10.244.3.5"), namespace="default")
        await h.wait_for(lambda: inf.get("default/good-3") is not None)
        assert not task.done()
    finally:
        await _stop(task)


@pytest.mark.parametrize("field, value", [
    pytest.param("uid", "5f0c\n", id="uid-newline"),
    pytest.param("resourceVersion", "812 -j ACCEPT", id="resource-version-space"),
    pytest.param("uid", 7, id="uid-not-a-string"),
])
def test_server_set_metadata_with_control_bytes_is_rejected_and_counted(field, value):
    raw = _svc("a")
    raw["metadata"][field] = value
    before = r.REJECTED.labels("services")._value.get()
    assert r.convert(r.SERVICES, raw) is None
    assert r.REJECTED.labels("services")._value.get() == before + 1
