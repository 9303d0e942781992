"""podnet installed on a lab from its shipped manifest, deploy/podnet.yaml, as a user installs it.

Pure part (:func:`lab_documents`): the manifest's documents with only the edits its header asks a
user to make for their cluster, each a ConfigMap value or a cluster-specific address:

- ``podnet-cni`` ConfigMap: ``cluster-cidr`` (the lab's pod network) and ``backend`` (``--backend``);
- ``podnet-api-endpoint`` ConfigMap: ``KUBERNETES_SERVICE_HOST``/``_PORT``, the API server's own
  underlay address;
- ``podnet-proxy`` ConfigMap: the KubeProxyConfiguration's ``clusterCIDR`` and
  ``iptables.minSyncPeriod`` (the lab's ``--proxy-min-sync-period``);
- ``podnet-dns`` ConfigMap: the Corefile's ``forward`` goes to the lab's upstream resolver instead of
  ``/etc/resolv.conf`` (the machine's resolver is outside the lab);
- the ``kube-dns`` Service's ``clusterIP``: the lab's DNS Service address.

Nothing else changes: images, commands, probes, security contexts, RBAC and volumes are the manifest's.
``lab up --cni reference`` (the comparison anchor) also drops the DaemonSet's CNI containers
(:func:`without_cni`), as a cluster that keeps its own CNI would.

Side effects (:func:`apply`): each document goes through the API as ``kubectl apply`` would leave it:
a POST to its collection creates it; when it exists already (409, or 422 for a Service naming a
clusterIP that is allocated, which the server answers before it could answer 409) a JSON merge
patch of the document updates it. The documents go in waves (:func:`waves`): Namespaces first, then
everything a pod may name (ServiceAccounts, RBAC, ConfigMaps, Secrets, Services, ...) concurrently,
then the workloads concurrently, so a controller's first pod never meets a missing ServiceAccount
or ConfigMap. :func:`staged` splits the documents in two applies: everything but the
Deployments first, the Deployments once every node's CNI daemon container is ready, because the
lab kubelet fails a pod whose CNI ADD fails (no conflist installed yet) where kubelet retries the
sandbox; the ReplicaSet controller would replace each failed pod at once, in a loop, until the
DaemonSet's init container had installed the CNI.

:func:`node_pod_log` reads a container log of the node DaemonSet's pod on one node (the CNI
daemon's backend summary for ``lab check``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from podnet.kube.client import ApiClient, ApiError

__all__ = ["MANIFEST", "load", "images", "lab_documents", "without_cni", "staged", "collection_path", "apply", "waves", "NODE_SELECTOR",
           "DNS_SELECTOR", "NODE_DAEMONSET", "DNS_DEPLOYMENT", "NODE_CONTAINERS", "node_pod_log"]

MANIFEST = Path(__file__).with_name("podnet.yaml")
"""deploy/podnet.yaml as installed with the package (a symlink to it in the source tree)."""

NODE_DAEMONSET = ("kube-system", "podnet-node")
DNS_DEPLOYMENT = ("kube-system", "podnet-dns")
NODE_SELECTOR = "k8s-app=podnet-node"
DNS_SELECTOR = "k8s-app=kube-dns,app.kubernetes.io/name=podnet"
NODE_CONTAINERS = {"cni": "cni-daemon", "proxy": "proxy", "policy": "policy"}
"""The lab's part name -> the node DaemonSet container that is that part."""

_CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "Namespace", "PriorityClass", "StorageClass",
                   "CustomResourceDefinition", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}


def load(path: Path = MANIFEST) -> list[dict[str, Any]]:
    """Every document of the manifest, in order."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def images(docs: Iterable[Mapping[str, Any]]) -> set[str]:
    """Every container image the workloads in ``docs`` name (init containers included)."""
    out = set()
    for d in docs:
        spec = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
            if c.get("image"):
                out.add(str(c["image"]))
    return out


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for d in docs:
        if d.get("kind") == kind and (d.get("metadata") or {}).get("name") == name:
            return d
    raise KeyError(f"{kind}/{name} is not in the manifest")


_FORWARD = re.compile(r"(?m)^(\s*forward\s+\.\s+)\S+")


def lab_documents(docs: list[dict[str, Any]], *, cluster_cidr: str, backend: str, api_host: str, api_port: int,
                  dns_service_ip: str, upstream_dns: str, proxy_min_sync: str) -> list[dict[str, Any]]:
    """The manifest's documents with the lab's values (see the module docstring); ``docs`` is not changed."""
    out = copy.deepcopy(docs)
    cni = _find(out, "ConfigMap", "podnet-cni")["data"]
    if "backend" not in cni:
        raise KeyError("the podnet-cni ConfigMap has no backend key")
    cni["cluster-cidr"], cni["backend"] = cluster_cidr, backend
    _find(out, "ConfigMap", "podnet-api-endpoint")["data"] = {
        "KUBERNETES_SERVICE_HOST": api_host, "KUBERNETES_SERVICE_PORT": str(api_port)}
    proxy = _find(out, "ConfigMap", "podnet-proxy")["data"]
    conf = yaml.safe_load(proxy["config.conf"])
    conf["clusterCIDR"] = cluster_cidr
    conf["iptables"]["minSyncPeriod"] = proxy_min_sync
    proxy["config.conf"] = yaml.safe_dump(conf, sort_keys=True)
    dns = _find(out, "ConfigMap", "podnet-dns")["data"]
    dns["Corefile"], n = _FORWARD.subn(lambda m: m.group(1) + upstream_dns, dns["Corefile"])
    if n != 1:
        raise ValueError(f"the podnet-dns Corefile has {n} forward lines, expected 1")
    _find(out, "Service", "kube-dns")["spec"]["clusterIP"] = dns_service_ip
    return out


def without_cni(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents with the node DaemonSet's CNI parts (the install-cni init container and the
    cni-daemon container) removed, as on a cluster that keeps its own CNI and takes only podnet's
    proxy and NetworkPolicy engine (``lab up --cni reference``: the CNI daemon would blackhole the
    node's pod CIDR that the reference bridge serves). ``docs`` is not changed."""
    out = copy.deepcopy(docs)
    spec = _find(out, "DaemonSet", NODE_DAEMONSET[1])["spec"]["template"]["spec"]
    spec["initContainers"] = [c for c in spec.get("initContainers") or () if c["name"] != "install-cni"]
    if not spec["initContainers"]:
        del spec["initContainers"]
    spec["containers"] = [c for c in spec["containers"] if c["name"] != NODE_CONTAINERS["cni"]]
    return out


def staged(docs: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(everything but the Deployments, the Deployments), each in manifest order."""
    docs = list(docs)
    return [d for d in docs if d["kind"] != "Deployment"], [d for d in docs if d["kind"] == "Deployment"]


def _plural(kind: str) -> str:
    low = kind.lower()
    return low[:-1] + "ies" if low.endswith("y") else low + "s"


def collection_path(doc: Mapping[str, Any]) -> str:
    """The REST collection a document is created in (kubectl's mapping for the built-in kinds)."""
    api_version, kind = doc["apiVersion"], doc["kind"]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if kind in _CLUSTER_SCOPED:
        return f"{base}/{_plural(kind)}"
    ns = (doc.get("metadata") or {}).get("namespace") or "default"
    return f"{base}/namespaces/{ns}/{_plural(kind)}"


_WAVE_OF = {"Namespace": 0, "DaemonSet": 2, "Deployment": 2, "ReplicaSet": 2, "StatefulSet": 2, "Job": 2,
            "CronJob": 2, "Pod": 2}


def waves(docs: Iterable[Mapping[str, Any]]) -> list[list[int]]:
    """The documents' indices in apply order: Namespaces, then what pods refer to, then the workloads
    and pods (each wave in manifest order; empty waves left out)."""
    out: list[list[int]] = [[], [], []]
    for i, d in enumerate(docs):
        out[_WAVE_OF.get(d["kind"], 1)].append(i)
    return [w for w in out if w]


async def _apply_one(client: ApiClient, d: Mapping[str, Any]) -> str:
    path, name = collection_path(d), d["metadata"]["name"]
    try:
        try:
            await client.request("POST", path, body=d)
            return f"{d['kind'].lower()}/{name} created"
        except ApiError as e:
            if e.code not in (409, 422):
                raise
            try:
                await client.request("GET", f"{path}/{name}")
            except ApiError as missing:
                if missing.is_not_found:
                    raise e from None  # a 422 about the document itself
                raise
        await client.request("PATCH", f"{path}/{name}", body=d, content_type="application/merge-patch+json")
        return f"{d['kind'].lower()}/{name} configured"
    except ApiError as e:
        raise RuntimeError(f"applying {d['kind']} {name}: {e}") from e


async def apply(client: ApiClient, docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Apply the documents (module docstring); returns kubectl's ``kind/name created|configured``, in
    the documents' order."""
    docs = list(docs)
    done: list[str] = [""] * len(docs)
    for wave in waves(docs):
        results = await asyncio.gather(*(_apply_one(client, docs[i]) for i in wave), return_exceptions=True)
        for i, res in zip(wave, results):
            if isinstance(res, BaseException):
                raise res
            done[i] = res
    return done


def node_pod_log(run_dir: Path, node: str, container: str) -> str:
    """The log of ``container`` of the node DaemonSet's pod on ``node`` (every instance, oldest first),
    from the kubelet's pod record (``<run-dir>/pods/<node>/*.json``) and its log layout; "" when none."""
    ns, _ = NODE_DAEMONSET
    out = []
    for rec_file in sorted((run_dir / "pods" / node).glob("*.json")):
        try:
            rec = json.loads(rec_file.read_text())
        except (OSError, ValueError):
            continue
        key, uid = str(rec.get("pod") or ""), str(rec.get("uid") or "")
        if not key.startswith(f"{ns}/{NODE_DAEMONSET[1]}-"):
            continue
        d = run_dir / "logs" / "pods" / f"{ns}_{key.split('/', 1)[1]}_{uid}" / container
        for f in sorted(d.glob("*.log"), key=lambda f: int(f.stem) if f.stem.isdigit() else -1):
            try:
                out.append(f.read_text(errors="replace"))
            except OSError:
                pass
    return "".join(out)
