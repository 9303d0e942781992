"""Run inside a test namespace: a lab API server on 127.0.0.1 holding the objects given as one
JSON line on stdin ([{"resource": plural, "namespace": ns or null, "object": {...}}]). Prints the
URL, then applies one command per further stdin line ({"op": "create"|"delete", "resource",
"namespace", "object"|"name"}) and prints "ok" after each; exits on EOF or after LIFETIME seconds."""

import asyncio
import json
import sys

from podnet.kube import resources as r
from podnet.kube.client import ApiClient
from podnet.netlab.apiserver.server import LabApiServer
from podnet.policy.engine import NETWORK_POLICIES

RES = {**r.BY_PLURAL, "networkpolicies": NETWORK_POLICIES}


async def main(lifetime: float) -> None:
    loop = asyncio.get_running_loop()
    api = await LabApiServer().start(["127.0.0.1:0"])
    async with ApiClient.from_url(api.url) as c:
        for item in json.loads(sys.stdin.readline()):
            await c.create(RES[item["resource"]], item["object"], namespace=item.get("namespace"))
        print(api.url, flush=True)

        async def commands() -> None:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    return
                cmd = json.loads(line)
                res = RES[cmd["resource"]]
                if cmd["op"] == "create":
                    await c.create(res, cmd["object"], namespace=cmd.get("namespace"))
                else:
                    await c.delete(res, cmd["name"], namespace=cmd.get("namespace"))
                print("ok", flush=True)

        await asyncio.wait([asyncio.create_task(commands())], timeout=lifetime)
    await api.stop()


asyncio.run(main(float(sys.argv[1])))
