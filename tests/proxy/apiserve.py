"""Run inside a test namespace: a lab API server on 127.0.0.1 with one Service
(10.96.0.41:80 -> ep1:8080 over a manual EndpointSlice). Prints the URL, then
serves until stdin closes or LIFETIME seconds pass. With NODE=IP as a third
argument, also a Node NODE whose InternalIP is IP."""

import asyncio
import sys

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer


async def main(ep_ip: str, lifetime: float, node: str = "") -> None:
    api = await LabApiServer().start(["127.0.0.1:0"])
    async with ApiClient.from_url(api.url) as c:
        if node:
            name, ip = node.split("=")
            await c.create(r.NODES, {"metadata": {"name": name}})
            await c.patch(r.NODES, name, {"status": {"addresses": [{"type": "InternalIP", "address": ip},
                                                                    {"type": "Hostname", "address": name}]}},
                          subresource="status")
        await c.create(r.SERVICES, {"metadata": {"name": "web", "namespace": "default"},
                                    "spec": {"clusterIP": "10.96.0.41", "type": "NodePort",
                                             "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30090}]}},
                       namespace="default")
        await c.create(r.ENDPOINT_SLICES, {"metadata": {"name": "web-1", "namespace": "default",
                                                        "labels": {"kubernetes.io/service-name": "web"}},
                                           "addressType": "IPv4", "endpoints": [{"addresses": [ep_ip], "nodeName": "node-b"}],
                                           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}, namespace="default")
    print(api.url, flush=True)
    loop = asyncio.get_running_loop()
    eof = loop.run_in_executor(None, sys.stdin.read)
    await asyncio.wait([eof], timeout=lifetime)
    await api.stop()


asyncio.run(main(sys.argv[1], float(sys.argv[2]), *sys.argv[3:4]))
