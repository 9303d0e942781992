"""The credentials ``lab up`` issues: modes, the token file the API server reads, kubeconfigs every
component loads, and a server started from them refusing everyone else."""

from __future__ import annotations

import stat

import pytest

from podnet.kube import resources as r
from podnet.kube.client import ApiClient, ApiError
from podnet.kube.kubeconfig import ClientConfig, load_kubeconfig
from podnet.netlab.apiserver.authn import TokenAuthenticator, parse_token_file
from podnet.netlab.apiserver.server import LabApiServer
from podnet.netlab.lab import credentials
from podnet.netlab.lab.topology import LabSpec, plan


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    p = plan(LabSpec(name="t", nodes=2), run_root=root, data_root=root / "data")
    return p, credentials.issue(p)


def test_every_identity_has_its_own_token(issued):
    p, tokens = issued
    keys = {i.key for i in credentials.identities(p)}
    assert keys == {"admin"} | {f"kubelet-{n.name}" for n in p.nodes}  # podnet's daemons: TokenRequest tokens
    assert set(tokens) == keys and len(set(tokens.values())) == len(keys)
    users = parse_token_file(credentials.token_file(p).read_text())
    assert {t: u.name for t, u in users.items()} == {tokens[i.key]: i.user for i in credentials.identities(p)}
    n1 = p.nodes[0].name
    assert users[tokens[f"kubelet-{n1}"]].groups == ("system:nodes",)
    assert users[tokens["admin"]].groups == ("system:masters",)


def test_private_files_are_private(issued):
    p, _ = issued
    d = credentials.token_file(p).parent
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in d.iterdir():
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode == (0o644 if f.suffix == ".crt" else 0o600), f
    assert not (d / "ca.key").exists()  # nothing else can ever be signed


@pytest.mark.parametrize("key", ["kubelet-{n}"])
def test_component_kubeconfigs(issued, key):
    p, tokens = issued
    key = key.format(n=p.nodes[0].name)
    cfg = load_kubeconfig(credentials.kubeconfig_path(p, key))
    assert cfg.server == p.master and p.master.startswith("https://")
    assert cfg.token == tokens[key]
    assert cfg.ca_data and "BEGIN CERTIFICATE" in cfg.ca_data


async def test_a_server_from_the_issued_files(issued, tmp_path):
    p, tokens = issued
    cert, key = credentials.serving_files(p)
    ca = credentials.ca_file(p).read_text()
    async with LabApiServer(authenticator=TokenAuthenticator.from_file(credentials.token_file(p)),
                            tls=(cert, key)) as api:
        kc = tmp_path / "kubeconfig"
        credentials.write_private(kc, credentials.kubeconfig_text("t", api.url, tokens["admin"], ca))
        async with ApiClient.from_flags(kubeconfig=str(kc)) as admin:
            items, _ = await admin.list(r.NAMESPACES)
            assert "kube-system" in {n["metadata"]["name"] for n in items}
        async with ApiClient(ClientConfig(server=api.url, ca_data=ca, token="guess")) as other:
            with pytest.raises(ApiError) as e:
                await other.list(r.NAMESPACES)
        assert e.value.code == 401
