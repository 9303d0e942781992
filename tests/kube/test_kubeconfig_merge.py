"""$KUBECONFIG as a merged list of files (client-go's rules), relative paths per file, injected env/home."""

from __future__ import annotations

import json

import pytest

from podnet.kube.kubeconfig import ConfigError, resolve
from podnet.kube.kubeconfig_merge import load_merged, merge_docs, split_kubeconfig_env


def doc(current=None, clusters=(), users=(), contexts=()):
    d = {"apiVersion": "v1", "kind": "Config",
         "clusters": [{"name": n, "cluster": c} for n, c in clusters],
         "users": [{"name": n, "user": u} for n, u in users],
         "contexts": [{"name": n, "context": c} for n, c in contexts]}
    if current is not None:
        d["current-context"] = current
    return d


A = doc("a", clusters=[("c", {"server": "https://a:1"})], users=[("u", {"token": "ta"})],
        contexts=[("a", {"cluster": "c", "user": "u"})])
B = doc("b", clusters=[("c", {"server": "https://b:1"}), ("cb", {"server": "https://cb:1"})],
        users=[("u", {"token": "tb"}), ("ub", {"token": "tub"})],
        contexts=[("b", {"cluster": "cb", "user": "ub"}), ("a", {"cluster": "cb"})])
NO_CURRENT = doc(None, clusters=[("cn", {"server": "https://n:1"})], contexts=[("n", {"cluster": "cn"})])


@pytest.mark.parametrize(
    "files, context, server, token",
    [
        pytest.param([A], None, "https://a:1", "ta", id="one-file"),
        pytest.param([A, B], None, "https://a:1", "ta", id="first-current-context-and-entries-win"),
        pytest.param([B, A], None, "https://cb:1", "tub", id="order-matters"),
        pytest.param([A, B], "b", "https://cb:1", "tub", id="context-from-second-file"),
        pytest.param([NO_CURRENT, B], None, "https://cb:1", "tub", id="current-context-from-first-that-sets-it"),
        pytest.param([NO_CURRENT, A], "n", "https://n:1", None, id="context-without-user"),
        pytest.param([B, A], "a", "https://cb:1", None, id="context-name-first-definition-wins"),
    ],
)
def test_merge_rules(tmp_path, files, context, server, token):
    paths = []
    for i, d in enumerate(files):
        p = tmp_path / f"k{i}"
        p.write_text(json.dumps(d))
        paths.append(str(p))
    cfg = resolve(environ={"KUBECONFIG": ":".join(paths)}, home=tmp_path / "nohome", root=tmp_path, context=context)
    assert (cfg.server, cfg.bearer()) == (server, token)


@pytest.mark.parametrize(
    "value, expect",
    [
        pytest.param("a:b", ["a", "b"], id="two"),
        pytest.param("a::b:", ["a", "b"], id="empties-dropped"),
        pytest.param("a:b:a", ["a", "b"], id="repeats-dropped"),
        pytest.param("", [], id="empty"),
        pytest.param(None, [], id="unset"),
    ],
)
def test_split_kubeconfig_env(value, expect):
    assert split_kubeconfig_env(value) == expect


def test_relative_paths_resolve_against_their_own_file(tmp_path):
    """Each entry's relative paths point next to the file that defined it, whatever file wins the merge."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    (one / "config").write_text(json.dumps(doc("ctx", contexts=[("ctx", {"cluster": "c", "user": "u"})],
                                               users=[("u", {"tokenFile": "tok", "client-certificate": "c.crt",
                                                             "client-key": "sub/c.key"})])))
    (two / "config").write_text(json.dumps(doc(None, clusters=[("c", {"server": "https://x:1",
                                                                      "certificate-authority": "ca.crt"})])))
    (one / "tok").write_text("from-one\n")
    cfg = resolve(environ={"KUBECONFIG": f"{one / 'config'}:{two / 'config'}"}, home=tmp_path, root=tmp_path)
    assert cfg.ca_file == str(two / "ca.crt")
    assert cfg.token_file == str(one / "tok") and cfg.bearer() == "from-one"
    assert (cfg.cert_file, cfg.key_file) == (str(one / "c.crt"), str(one / "sub" / "c.key"))


@pytest.mark.parametrize(
    "command, expect",
    [
        pytest.param("./bin/plugin", "{dir}/bin/plugin", id="relative-path-resolved"),
        pytest.param("/usr/bin/plugin", "/usr/bin/plugin", id="absolute-kept"),
        pytest.param("aws", "aws", id="bare-name-looked-up-in-PATH"),
    ],
)
def test_exec_command_path(tmp_path, command, expect):
    d = doc("x", clusters=[("c", {"server": "https://x:1"})], contexts=[("x", {"cluster": "c", "user": "u"})],
            users=[("u", {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": command}})])
    (tmp_path / "config").write_text(json.dumps(d))
    cfg = resolve(environ={"KUBECONFIG": str(tmp_path / "config")}, home=tmp_path, root=tmp_path)
    assert cfg.exec is not None and cfg.exec.command == expect.format(dir=tmp_path)


@pytest.mark.parametrize(
    "files, message",
    [
        pytest.param([doc("a", clusters=[("c", {}), ("c", {})])], "duplicate name", id="duplicate-name-in-one-file"),
        pytest.param(["- not\n- a map\n"], "not a mapping", id="not-a-mapping"),
        pytest.param(["a: [b\n"], "bad YAML", id="bad-yaml"),
        pytest.param([doc("missing", clusters=[("c", {"server": "https://x:1"})])], "no context", id="unknown-context"),
    ],
)
def test_broken_files_are_errors(tmp_path, files, message):
    paths = []
    for i, d in enumerate(files):
        p = tmp_path / f"k{i}"
        p.write_text(d if isinstance(d, str) else json.dumps(d))
        paths.append(str(p))
    with pytest.raises(ConfigError, match=message):
        resolve(environ={"KUBECONFIG": ":".join(paths)}, home=tmp_path, root=tmp_path)


def test_empty_files_count_as_nothing(tmp_path):
    (tmp_path / "empty").write_text("")
    merged, used = load_merged([tmp_path / "empty", tmp_path / "missing"])
    assert used == [tmp_path / "empty"] and merged["current-context"] == "" and merged["clusters"] == []


def test_home_comes_from_the_injected_environment(tmp_path):
    """No --kubeconfig, no $KUBECONFIG: $HOME of the *given* environment, not the process's."""
    home = tmp_path / "someone"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(json.dumps(A))
    cfg = resolve(environ={"HOME": str(home)}, root=tmp_path)
    assert cfg.server == "https://a:1" and str(home) in cfg.source


def test_master_overrides_merged_server_keeps_credentials(tmp_path):
    (tmp_path / "k").write_text(json.dumps(A))
    cfg = resolve(master="https://127.0.0.1:9", kubeconfig=str(tmp_path / "k"), environ={}, root=tmp_path)
    assert (cfg.server, cfg.token) == ("https://127.0.0.1:9", "ta")


def test_merge_docs_is_pure():
    merged = merge_docs([("a", A), ("b", B)])
    assert [c["name"] for c in merged["clusters"]] == ["c", "cb"]
    assert [c["cluster"]["server"] for c in merged["clusters"]] == ["https://a:1", "https://cb:1"]
    assert merged["current-context"] == "a"
