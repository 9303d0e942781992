"""deploy/podnet.yaml against the Kubernetes schemas (offline, kubernetes-validate) and what each object must hold.

Also: the ConfigMaps decode in the binaries that read them (the KubeProxyConfiguration
in podnet-proxy's strict decoder, the Corefile in podnet-dns's parser), and the kube-dns
Service applies to the lab API server with kubectl on its own (the whole manifest is applied
in test_apply_lab.py).
"""

from __future__ import annotations

import copy
import importlib.util
import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (the test extra)")


def _load_manifest():
    name = "podnet_tests_deploy_manifest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("manifest.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


m = _load_manifest()
DOCS = m.docs()
# kubectl on this machine is 1.32; also the newest schemas the package ships
VERSIONS = ["1.32.0", kv.latest_version()]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("doc", DOCS, ids=[f"{d['kind']}-{d['metadata']['name']}" for d in DOCS])
def test_schema(doc, version):
    kv.validate(doc, version, strict=True)


def _broken(kind: str, name: str, edit) -> dict:
    doc = copy.deepcopy(m.find(kind, name))
    edit(doc)
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(_broken("DaemonSet", "podnet-node", lambda d: d["spec"]["template"]["spec"].update(hostNetwrk=True)),
                     id="unknown-field"),
        pytest.param(_broken("DaemonSet", "podnet-node",
                             lambda d: d["spec"]["template"]["spec"]["containers"][0].update(ports=[{"containerPort": "x"}])),
                     id="wrong-type"),
        pytest.param(_broken("Service", "kube-dns", lambda d: d["spec"]["ports"][0].pop("port")), id="missing-required"),
    ],
)
def test_schema_check_catches_mistakes(doc):
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, VERSIONS[0], strict=True)


def test_every_object_lives_in_kube_system_or_is_cluster_scoped():
    for d in DOCS:
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in d["metadata"]
        else:
            assert d["metadata"]["namespace"] == "kube-system", d["metadata"]["name"]


def test_node_daemonset():
    ds = m.find("DaemonSet", "podnet-node")
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["hostNetwork"] is True and spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]  # every taint
    assert spec["serviceAccountName"] == "podnet-node"
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["xtables-lock"]["hostPath"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    assert vols["lib-modules"]["hostPath"]["path"] == "/lib/modules"
    assert vols["ipam"]["hostPath"]["path"] == "/var/lib/podnet/cni"  # on the host: survives pod restarts
    assert vols["run-podnet"]["hostPath"]["path"] == "/run/podnet"
    (init,) = spec["initContainers"]
    assert init["command"][:2] == ["podnet-cni", "install"] and "--form=static" in init["command"]
    assert {v["mountPath"] for v in init["volumeMounts"]} == {"/host/opt/cni/bin", "/host/etc/cni/net.d"}
    cs = {c["name"]: c for c in spec["containers"]}
    assert set(cs) == {"cni-daemon", "proxy", "policy"}
    for c in cs.values():
        env = {e["name"]: e for e in c["env"]}
        assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
        mounts = {v["name"]: v for v in c["volumeMounts"]}
        assert mounts["lib-modules"].get("readOnly") is True
        assert mounts["xtables-lock"]["mountPath"] == "/run/xtables.lock"
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            assert c[probe]["httpGet"]["port"] in ports, (c["name"], probe)
    # the socket the installed conflist names is the one the daemon listens on, on the same host path
    sock = next(a.split("=", 1)[1] for a in init["command"] if a.startswith("--socket="))
    assert f"--socket={sock}" in cs["cni-daemon"]["command"]
    assert Path(sock).parent == Path(next(v["mountPath"] for v in cs["cni-daemon"]["volumeMounts"]
                                          if v["name"] == "run-podnet"))
    # /healthz and /livez on the port --health-listen serves
    port = cs["cni-daemon"]["command"][cs["cni-daemon"]["command"].index("--health-listen=0.0.0.0:9967")]
    assert port.endswith(":9967") and cs["cni-daemon"]["ports"][0]["containerPort"] == 9967
    assert cs["cni-daemon"]["readinessProbe"]["httpGet"]["path"] == "/healthz"
    # the policy engine: capabilities, not privileged; its probes on the port it serves
    pol = cs["policy"]
    assert pol["securityContext"]["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
    assert "privileged" not in pol["securityContext"]
    bind = next(a.split("=", 1)[1] for a in pol["command"] if a.startswith("--metrics-bind-address="))
    assert int(bind.rpartition(":")[2]) == pol["ports"][0]["containerPort"]
    assert bind.startswith("127.0.0.1:") and pol["readinessProbe"]["httpGet"]["host"] == "127.0.0.1"
    # no host port shared by two containers of the hostNetwork pod
    used = [p["containerPort"] for c in cs.values() for p in c["ports"]]
    assert len(used) == len(set(used))


def test_dns_deployment_pdb_and_service():
    dep = m.find("Deployment", "podnet-dns")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (c,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert (c["livenessProbe"]["httpGet"]["path"], ports[c["livenessProbe"]["httpGet"]["port"]]) == ("/health", 8080)
    assert (c["readinessProbe"]["httpGet"]["path"], ports[c["readinessProbe"]["httpGet"]["port"]]) == ("/ready", 8181)
    assert c["command"][1:] == ["-conf", "/etc/coredns/Corefile"]
    assert c["securityContext"]["capabilities"] == {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}
    pdb = m.find("PodDisruptionBudget", "podnet-dns")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
    svc = m.find("Service", "kube-dns")
    assert ipaddress.ip_address(svc["spec"]["clusterIP"]) == ipaddress.ip_address("10.96.0.10")
    assert sorted((p["port"], p["protocol"]) for p in svc["spec"]["ports"]) == [(53, "TCP"), (53, "UDP"), (9153, "TCP")]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())


def test_proxy_config_decodes_strictly_in_podnet_proxy():
    config = pytest.importorskip("podnet.proxy.config")
    text = m.find("ConfigMap", "podnet-proxy")["data"]["config.conf"]
    settings = config.resolve(config.decode(text))
    assert settings.cluster_cidrs == ("10.244.0.0/16",)
    assert settings.healthz_bind_address == "0.0.0.0:10256"  # empty means kube-proxy's default
    assert (settings.sync_period, settings.min_sync_period) == (30.0, 1.0)  # 0s means kube-proxy's defaults
    assert settings.kubeconfig == ""  # in-cluster discovery


def test_corefile_parses_in_podnet_dns():
    corefile = pytest.importorskip("podnet.dns.corefile")
    blocks = corefile.parse(m.find("ConfigMap", "podnet-dns")["data"]["Corefile"])
    names = [d.name for b in blocks for d in b.directives]
    assert {"errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop", "reload",
            "loadbalance"} <= set(names)


def test_cni_settings_are_usable():
    data = m.find("ConfigMap", "podnet-cni")["data"]
    ipaddress.ip_network(data["cluster-cidr"])
    assert int(data["mtu"]) == 0 or 576 <= int(data["mtu"]) <= 65535  # 0: derived from the underlay
    proxy_conf = yaml.safe_load(m.find("ConfigMap", "podnet-proxy")["data"]["config.conf"])
    assert proxy_conf["clusterCIDR"] == data["cluster-cidr"]  # one pod network for both


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")
async def test_kube_dns_service_applies_to_the_lab_api_server_with_kubectl(lab_api, client, tmp_path):
    from podnet.kube import resources

    svc = m.find("Service", "kube-dns")
    await client.get(resources.NAMESPACES, "kube-system")  # the lab server has it, as every cluster
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(svc))
    env = {**os.environ, "HOME": str(tmp_path)}  # kubectl's discovery cache stays in tmp_path
    import asyncio

    p = await asyncio.to_thread(subprocess.run, ["kubectl", "--server", lab_api.url, "apply", "-f", str(path)],
                                capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    got = await client.get(resources.SERVICES, "kube-dns", "kube-system")
    assert got["spec"]["clusterIP"] == "10.96.0.10"
    assert sorted(pt["name"] for pt in got["spec"]["ports"]) == ["dns", "dns-tcp", "metrics"]


PROBE_CODE = {"podnet-cni": "cni", "podnet-proxy": "proxy", "podnet-dns": "dns", "podnet-policy": "policy"}


@pytest.mark.parametrize("where, container", [(w, c) for w, c in m.containers() if "livenessProbe" in c],
                         ids=[w for w, c in m.containers() if "livenessProbe" in c])
def test_probe_paths_are_served_by_the_binary(where, container):
    """Each probe's path is a route the binary's package registers (a real endpoint, not a guess)."""
    package = Path(__file__).resolve().parents[2] / PROBE_CODE[container["command"][0]]
    source = "\n".join(p.read_text() for p in package.glob("*.py"))
    for probe in ("livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert f'"{path}"' in source, f"{where} {probe}: {path} is not a route in {package.name}/"
