"""The lab installs podnet from deploy/podnet.yaml (netlab/lab/install.py): the user's edits only,
the REST collections, the two apply stages, the apply itself against an HTTPS lab API server with
RBAC on, and reading a node pod's container log back for ``lab check``.

``lab up`` + ``lab check`` with podnet installed this way is tests/lab/test_lab_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from podnet.cni.overlay import BACKENDS
from podnet.kube.client import ApiClient
from podnet.kube.kubeconfig import ClientConfig
from podnet.netlab.apiserver.authn import TokenAuthenticator, User
from podnet.netlab.apiserver.authz import policy_from_yaml
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.lab import install, parts
from podnet.netlab.lab.credentials import make_pki

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "podnet.yaml"
LAB = dict(cluster_cidr="10.99.0.0/16", backend="vxlan", api_host="192.168.77.1", api_port=6443,
           dns_service_ip="10.96.0.10", upstream_dns="192.168.77.2", proxy_min_sync="100ms")


def _key(d: dict) -> tuple[str, str]:
    return d["kind"], d["metadata"]["name"]


def _changed(a, b, path: str = "") -> set[str]:
    """Dotted paths where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _changed(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return set() if a == b else {path}


def test_the_packaged_manifest_is_deploys():
    # a symlink in the tree, a copy in the installed wheel: the same bytes either way
    assert install.MANIFEST.read_bytes() == DEPLOY.read_bytes()
    assert install.load() == [d for d in yaml.safe_load_all(DEPLOY.read_text()) if d]


def test_lab_documents_change_only_the_users_knobs():
    docs = install.load()
    before = json.dumps(docs, sort_keys=True)
    lab = install.lab_documents(docs, **LAB)
    assert json.dumps(docs, sort_keys=True) == before  # the input is not changed
    assert [_key(d) for d in lab] == [_key(d) for d in docs]
    changed = {f"{k[0]}/{k[1]}:{p}" for d, e in zip(docs, lab) for k in [_key(d)] for p in _changed(d, e)}
    assert changed == {
        "ConfigMap/podnet-cni:data.cluster-cidr", "ConfigMap/podnet-cni:data.backend",
        "ConfigMap/podnet-api-endpoint:data.KUBERNETES_SERVICE_HOST",
        "ConfigMap/podnet-api-endpoint:data.KUBERNETES_SERVICE_PORT",
        "ConfigMap/podnet-proxy:data.config.conf", "ConfigMap/podnet-dns:data.Corefile",
    }  # the kube-dns clusterIP is the manifest's own 10.96.0.10 here
    by = {_key(d): d for d in lab}
    assert by["ConfigMap", "podnet-cni"]["data"] | {} == {**by["ConfigMap", "podnet-cni"]["data"],
                                                          "cluster-cidr": "10.99.0.0/16", "backend": "vxlan"}
    assert by["ConfigMap", "podnet-api-endpoint"]["data"] == {"KUBERNETES_SERVICE_HOST": "192.168.77.1",
                                                              "KUBERNETES_SERVICE_PORT": "6443"}
    old_conf = yaml.safe_load(next(d for d in docs if _key(d) == ("ConfigMap", "podnet-proxy"))["data"]["config.conf"])
    new_conf = yaml.safe_load(by["ConfigMap", "podnet-proxy"]["data"]["config.conf"])
    assert _changed(old_conf, new_conf) == {"clusterCIDR", "iptables.minSyncPeriod"}
    assert (new_conf["clusterCIDR"], new_conf["iptables"]["minSyncPeriod"]) == ("10.99.0.0/16", "100ms")
    corefile = by["ConfigMap", "podnet-dns"]["data"]["Corefile"]
    assert "forward . 192.168.77.2 {" in corefile and "/etc/resolv.conf" not in corefile


def test_lab_documents_set_the_dns_service_ip():
    lab = install.lab_documents(install.load(), **{**LAB, "dns_service_ip": "10.100.0.10"})
    assert next(d for d in lab if _key(d) == ("Service", "kube-dns"))["spec"]["clusterIP"] == "10.100.0.10"


def test_the_backend_knob_reaches_the_cni_daemon():
    """The podnet-cni ConfigMap's backend is a value the daemon accepts, passed through env to --backend."""
    docs = install.load()
    cm = next(d for d in docs if _key(d) == ("ConfigMap", "podnet-cni"))
    assert cm["data"]["backend"] == "auto" and cm["data"]["backend"] in BACKENDS
    ds = next(d for d in docs if _key(d) == ("DaemonSet", "podnet-node"))
    (cni,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == install.NODE_CONTAINERS["cni"]]
    assert "--backend=$(BACKEND)" in cni["command"]
    assert {"name": "BACKEND", "valueFrom": {"configMapKeyRef": {"name": "podnet-cni", "key": "backend"}}} in cni["env"]


def test_staged_applies_deployments_last():
    docs = install.load()
    first, second = install.staged(docs)
    assert [d["kind"] for d in second] == ["Deployment"]
    assert sorted(map(_key, first + second)) == sorted(map(_key, docs))
    assert ("DaemonSet", "podnet-node") in map(_key, first)


@pytest.mark.parametrize("doc,path", [
    pytest.param({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "kube-system"}},
                 "/api/v1/namespaces/kube-system/configmaps", id="core-namespaced"),
    pytest.param({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}},
                 "/api/v1/namespaces/default/services", id="default-namespace"),
    pytest.param({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "a", "namespace": "x"}},
                 "/apis/apps/v1/namespaces/x/daemonsets", id="group"),
    pytest.param({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "a", "namespace": "x"}},
                 "/apis/policy/v1/namespaces/x/poddisruptionbudgets", id="pdb"),
    pytest.param({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "a", "namespace": "x"}},
                 "/apis/networking.k8s.io/v1/namespaces/x/networkpolicies", id="y-plural"),
    pytest.param({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "a"}},
                 "/apis/rbac.authorization.k8s.io/v1/clusterroles", id="cluster-scoped"),
])
def test_collection_path(doc, path):
    assert install.collection_path(doc) == path


async def test_apply_creates_then_configures_every_document(tmp_path):
    make_pki(tmp_path, ["127.0.0.1"])
    admin = {"admin-tok": User("kubernetes-admin", "admin", ("system:masters",))}
    docs = install.lab_documents(install.load(), **LAB)
    async with LabApiServer(authenticator=TokenAuthenticator(admin), policy=policy_from_yaml(""),
                            tls=(tmp_path / "apiserver.crt", tmp_path / "apiserver.key")) as api:
        cfg = ClientConfig(server=api.url, ca_file=str(tmp_path / "ca.crt"), token="admin-tok")
        async with ApiClient(cfg) as client:
            first = await install.apply(client, docs)
            assert first == [f"{d['kind'].lower()}/{d['metadata']['name']} created" for d in docs]
            stored = {}
            for d in docs:
                got = await client.request("GET", f"{install.collection_path(d)}/{d['metadata']['name']}")
                stored[_key(d)] = got
            assert stored["ConfigMap", "podnet-cni"]["data"]["backend"] == "vxlan"
            assert stored["ClusterRole", "podnet-node"]["rules"] == next(
                d for d in docs if _key(d) == ("ClusterRole", "podnet-node"))["rules"]
            again = await install.apply(client, docs)
            assert again == [f"{d['kind'].lower()}/{d['metadata']['name']} configured" for d in docs]


def test_node_pod_log_reads_the_cni_daemon_of_that_node(tmp_path):
    run = tmp_path
    for node, uid, text in (("n1", "u1", "backend auto: n2 10.244.1.0/24 host-gw\n"),
                            ("n2", "u2", "backend auto: n1 10.244.0.0/24 vxlan\n")):
        (run / "pods" / node).mkdir(parents=True)
        (run / "pods" / node / f"host-{uid}.json").write_text(json.dumps({"pod": f"kube-system/podnet-node-{uid}x",
                                                                          "uid": uid}))
        d = run / "logs" / "pods" / f"kube-system_podnet-node-{uid}x_{uid}" / "cni-daemon"
        d.mkdir(parents=True)
        (d / "0.log").write_text("first run\n")
        (d / "1.log").write_text(text)
    (run / "pods" / "n1" / "pnl-t-n1-p1.json").write_text(json.dumps({"pod": "default/echo", "uid": "u9"}))
    assert install.node_pod_log(run, "n1", "cni-daemon") == "first run\nbackend auto: n2 10.244.1.0/24 host-gw\n"
    assert install.node_pod_log(run, "n2", "cni-daemon").endswith("vxlan\n")
    assert install.node_pod_log(run, "n3", "cni-daemon") == ""


def test_without_cni_drops_only_the_node_pods_cni_containers():
    docs = install.load()
    before = json.dumps(docs, sort_keys=True)
    out = install.without_cni(docs)
    assert json.dumps(docs, sort_keys=True) == before
    spec = next(d for d in out if _key(d) == ("DaemonSet", "podnet-node"))["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["proxy", "policy"]
    changed = {_key(d) for d, e in zip(docs, out) if d != e}
    assert changed == {("DaemonSet", "podnet-node")}


@pytest.mark.parametrize("container,flag", [
    pytest.param("cni-daemon", f"--health-listen=0.0.0.0:{parts.CNI_HEALTH_PORT}", id="cni-health"),
    pytest.param("policy", f"--metrics-bind-address=127.0.0.1:{parts.POLICY_HEALTH_PORT}", id="policy-health"),
])
def test_the_labs_health_ports_are_the_manifests(container, flag):
    """lab up polls the CNI daemon's /healthz, lab check the policy engine's, where the manifest serves them."""
    ds = next(d for d in install.load() if _key(d) == ("DaemonSet", "podnet-node"))
    (c,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == container]
    assert flag in c["command"]
