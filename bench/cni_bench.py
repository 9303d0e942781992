"""podnet-cni vs Debian's reference bridge + host-local, side by side in one run.

    .venv/bin/python -P bench/cni_bench.py [--pods 50] [--held 1000] [--concurrent 100] [--out bench/results/cni.md]

Everything runs in network namespaces this script creates (prefix
``pnt-cni-bench-``) and removes: one "node" netns per plugin (the reference's
bridge and host-local state, and podnet's daemon, live there), plus a fresh
pod netns per ADD. Timings are wall times around the plugin exec, measured by
a worker process running *inside* the node netns (as a runtime would), with
reference and podnet interleaved pod by pod so machine noise hits both alike.

Measured: plugin exec baseline (VERSION; podnet's shim in each install form),
ADD and DEL (median, p99) over N pods each into a fresh netns (also through the
opt-in compiled shim when a C compiler exists), ADD/DEL with
1000 reservations held, and the wall time of 100 concurrent ADDs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from podnet.cni import install
from podnet.netlab.netns import NetnsPool

PY = sys.executable
HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------- worker (inside a node netns)


def plugin_env(verb: str, cid: str, netns: str, ifname: str = "eth0") -> dict:
    return {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
            "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}",
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def timed(binary: str, conf: bytes, env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([binary], input=conf, env=env, capture_output=True)
    ms = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        raise RuntimeError(f"{binary} {env['CNI_COMMAND']} {env['CNI_CONTAINERID']}: {p.stdout!r} {p.stderr!r}")
    return ms


def worker(job: dict) -> dict:
    """Runs in the node netns. job: {binary, conf, op, ...}; returns timings."""
    b, conf = job["binary"], json.dumps(job["conf"]).encode()
    op = job["op"]
    if op == "version":
        return {"ms": [timed(b, b"{}", {"CNI_COMMAND": "VERSION"}) for _ in range(job["n"])]}
    if op == "add_del":
        add, dele = [], []
        for cid, ns in job["pods"]:
            add.append(timed(b, conf, plugin_env("ADD", cid, ns)))
            dele.append(timed(b, conf, plugin_env("DEL", cid, ns)))
        return {"add": add, "del": dele}
    if op == "add_only":
        return {"add": [timed(b, conf, plugin_env("ADD", cid, ns, ifn)) for cid, ns, ifn in job["pods"]]}
    if op == "direct":  # the daemon's share: one socket round trip, no plugin exec
        from podnet.cni import shim

        add, dele = [], []
        for cid, ns in job["pods"]:
            for verb, out in (("ADD", add), ("DEL", dele)):
                t0 = time.perf_counter()
                code, res = shim.call_daemon(job["socket"], shim.encode_request(plugin_env(verb, cid, ns), conf))
                out.append((time.perf_counter() - t0) * 1000)
                if code:
                    raise RuntimeError(res)
        return {"add": add, "del": dele}
    if op == "concurrent":
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(job["pods"])) as ex:
            per = list(ex.map(lambda p: timed(b, conf, plugin_env("ADD", p[0], p[1])), job["pods"]))
        return {"wall": (time.perf_counter() - t0) * 1000, "per": per}
    raise ValueError(op)


def in_netns(ns: str, job: dict) -> dict:
    p = subprocess.run(["ip", "netns", "exec", ns, PY, "-P", str(HERE), "--worker"], input=json.dumps(job),
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout)


# ----------------------------------------------------------------------------- driver


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def ref_conf(data_dir: str, cidr: str) -> dict:
    return {"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0", "isGateway": True,
            "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": cidr}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--held", type=int, default=1000)
    ap.add_argument("--held-pods", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(json.loads(sys.stdin.read()))))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="podnet-cni-bench-"))
    pool = NetnsPool("pnt-cni-bench-")
    daemon = None
    rows: list[tuple[str, str, str, str]] = []
    try:
        ref_ns, pn_ns = pool.netns("ref"), pool.netns("pn")
        cidr = "10.244.0.0/20"
        rconf = ref_conf(str(tmp / "ipam"), cidr)
        bin_dir = tmp / "bin"
        install.install(str(bin_dir), str(tmp / "net.d"), str(tmp / "cni.sock"))
        src_dir = tmp / "bin-src"
        install.install(str(src_dir), str(tmp / "net.d-src"), str(tmp / "cni.sock"), form="source")
        c_dir = tmp / "bin-c"
        have_cc = bool(shutil.which("cc") or shutil.which("gcc"))
        if have_cc:
            install.install(str(c_dir), str(tmp / "net.d-c"), str(tmp / "cni.sock"), form="c")
        cbin = str(c_dir / "podnet-cni")
        pconf = {"cniVersion": "1.0.0", "name": "bench", "type": "podnet-cni", "socket": str(tmp / "cni.sock")}
        pbin = str(bin_dir / "podnet-cni")
        log = open(tmp / "daemon.log", "wb")
        daemon = pn_ns.popen(str(Path(PY).parent / "podnet-cni"), "daemon", "--socket", str(tmp / "cni.sock"),
                             "--node-name", "bench", "--data-dir", str(tmp / "data"), "--pod-cidr", cidr,
                             stdout=log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if (tmp / "cni.sock").exists():
                break
            time.sleep(0.05)

        # 1. exec baseline
        v_ref, v_pn, v_src, v_c = [], [], [], []
        for _ in range(5):  # interleaved rounds
            v_ref += in_netns(ref_ns.name, {"op": "version", "binary": "/usr/lib/cni/bridge", "conf": {}, "n": 10})["ms"]
            v_pn += in_netns(pn_ns.name, {"op": "version", "binary": pbin, "conf": {}, "n": 10})["ms"]
            v_src += in_netns(pn_ns.name, {"op": "version", "binary": str(src_dir / "podnet-cni"), "conf": {},
                                            "n": 10})["ms"]
            if have_cc:
                v_c += in_netns(pn_ns.name, {"op": "version", "binary": cbin, "conf": {}, "n": 10})["ms"]
        c_txt = f" / {statistics.median(v_c):.1f} (opt-in C)" if v_c else ""
        rows.append(("exec baseline (VERSION), median ms", f"{statistics.median(v_ref):.1f}",
                     f"{statistics.median(v_pn):.1f} (bytecode) / {statistics.median(v_src):.1f} (source){c_txt}", ""))

        # 2. ADD/DEL, each into a fresh netns, interleaved
        runs = {"ref": (ref_ns, "/usr/lib/cni/bridge", rconf), "pn": (pn_ns, pbin, pconf)}
        if have_cc:
            runs["c"] = (pn_ns, cbin, pconf)
        got: dict[str, dict[str, list[float]]] = {w: {"add": [], "del": []} for w in runs}
        for i in range(a.pods):
            for which, (node, binary, conf) in runs.items():
                pod = pool.netns("p")
                out = in_netns(node.name, {"op": "add_del", "binary": binary, "conf": conf,
                                           "pods": [[f"b{which}{i}", pod.path]]})
                got[which]["add"] += out["add"]
                got[which]["del"] += out["del"]
                pool.made.remove(pod)
                subprocess.run(["ip", "netns", "del", pod.name], check=True)
        for verb in ("add", "del"):
            r, p = got["ref"][verb], got["pn"][verb]
            rm, pm = statistics.median(r), statistics.median(p)
            rows.append((f"{verb.upper()} median / p99 ms ({a.pods} pods, fresh netns)",
                         f"{rm:.1f} / {pct(r, .99):.1f}", f"{pm:.1f} / {pct(p, .99):.1f}", f"{pm / rm:.2f}x"))
        if have_cc:
            for verb in ("add", "del"):
                rm, cm = statistics.median(got["ref"][verb]), statistics.median(got["c"][verb])
                rows.append((f"{verb.upper()} median ms, podnet with the opt-in C shim (same pods loop)", f"{rm:.1f}",
                             f"{cm:.1f}", f"{cm / rm:.2f}x"))

        # 2b. the daemon's share of podnet's ADD/DEL (no exec of the shim)
        pods = [pool.netns("d") for _ in range(min(a.pods, 20))]
        out = in_netns(pn_ns.name, {"op": "direct", "binary": pbin, "conf": pconf, "socket": str(tmp / "cni.sock"),
                                    "pods": [[f"d{i}", p.path] for i, p in enumerate(pods)]})
        rows.append((f"podnet daemon share (socket round trip, no exec): ADD / DEL median ms ({len(pods)} pods)",
                     "", f"{statistics.median(out['add']):.1f} / {statistics.median(out['del']):.1f}", ""))
        for p in pods:
            pool.made.remove(p)
            subprocess.run(["ip", "netns", "del", p.name], check=True)

        # 3. with reservations held: reference gets host-local files, podnet real attachments
        ipam_dir = tmp / "ipam" / "bench"
        ipam_dir.mkdir(parents=True, exist_ok=True)
        import ipaddress

        net = ipaddress.ip_network(cidr)
        for k in range(a.held):
            (ipam_dir / str(net.network_address + 2 + k)).write_text(f"held{k}\r\neth0")
        holders = [pool.netns("h") for _ in range(max(1, a.held // 250))]
        jobs = [[f"held{k}", holders[k % len(holders)].path, f"e{k}"] for k in range(a.held)]
        in_netns(pn_ns.name, {"op": "add_only", "binary": pbin, "conf": pconf, "pods": jobs})
        pods = [pool.netns("e") for _ in range(min(a.held_pods, 20))]
        out = in_netns(pn_ns.name, {"op": "direct", "binary": pbin, "conf": pconf, "socket": str(tmp / "cni.sock"),
                                    "pods": [[f"e{i}", p.path] for i, p in enumerate(pods)]})
        rows.append((f"podnet daemon share with {a.held} reservations held: ADD / DEL median ms ({len(pods)} pods)",
                     "", f"{statistics.median(out['add']):.1f} / {statistics.median(out['del']):.1f}", ""))
        for p in pods:
            pool.made.remove(p)
            subprocess.run(["ip", "netns", "del", p.name], check=True)
        r_add, r_del, p_add, p_del = [], [], [], []
        for i in range(a.held_pods):
            for which in ("ref", "pn"):
                pod = pool.netns("q")
                node, binary, conf = (ref_ns, "/usr/lib/cni/bridge", rconf) if which == "ref" else (pn_ns, pbin, pconf)
                out = in_netns(node.name, {"op": "add_del", "binary": binary, "conf": conf,
                                           "pods": [[f"q{which}{i}", pod.path]]})
                (r_add if which == "ref" else p_add).extend(out["add"])
                (r_del if which == "ref" else p_del).extend(out["del"])
                pool.made.remove(pod)
                subprocess.run(["ip", "netns", "del", pod.name], check=True)
        for label, r, p in (("ADD", r_add, p_add), ("DEL", r_del, p_del)):
            rm, pm = statistics.median(r), statistics.median(p)
            rows.append((f"{label} median ms with {a.held} reservations held ({a.held_pods} pods)", f"{rm:.1f}",
                         f"{pm:.1f}", f"{pm / rm:.2f}x"))

        # 4. concurrent ADDs (after releasing the held ones)
        for d in holders:
            pool.made.remove(d)
            subprocess.run(["ip", "netns", "del", d.name], check=True)
        for f in ipam_dir.iterdir():
            if f.name[0].isdigit():
                f.unlink()
        walls = {}
        for which in ("ref", "pn"):
            pods = [pool.netns("c") for _ in range(a.concurrent)]
            node, binary, conf = (ref_ns, "/usr/lib/cni/bridge", rconf) if which == "ref" else (pn_ns, pbin, pconf)
            out = in_netns(node.name, {"op": "concurrent", "binary": binary, "conf": conf,
                                       "pods": [[f"c{which}{i}", p.path] for i, p in enumerate(pods)]})
            walls[which] = out
            for p in pods:
                pool.made.remove(p)
                subprocess.run(["ip", "netns", "del", p.name], check=True)
        rows.append((f"{a.concurrent} concurrent ADDs: wall ms (per-call median)",
                     f"{walls['ref']['wall']:.0f} ({statistics.median(walls['ref']['per']):.0f})",
                     f"{walls['pn']['wall']:.0f} ({statistics.median(walls['pn']['per']):.0f})",
                     f"{walls['pn']['wall'] / walls['ref']['wall']:.2f}x"))
        shebang = Path(pbin).read_text().splitlines()[0]  # read before the temp dir goes
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait(10)
        pool.close()
        shutil.rmtree(tmp, ignore_errors=True)

    table = ["| measurement | reference bridge+host-local | podnet-cni | podnet/ref |", "|---|---|---|---|"]
    table += [f"| {m} | {r} | {p} | {x} |" for m, r, p, x in rows]
    text = "\n".join(table)
    print(text)
    if a.out:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        Path(a.out).write_text(
            f"# podnet-cni benchmark\n\nRun {stamp} on this 2-vCPU VM (shared, noisy) with\n"
            f"`.venv/bin/python -P bench/cni_bench.py --pods {a.pods} --held {a.held} --held-pods {a.held_pods}"
            f" --concurrent {a.concurrent}"
            f" --out {a.out}`.\nReference: Debian containernetworking-plugins (/usr/lib/cni/bridge + host-local, "
            "isGateway, hairpin, no ipMasq). podnet: shim installed by `podnet-cni install` (bytecode form, "
            f"shebang `{shebang}`) + warm daemon, ptp veth.\n"
            "Wall time per exec, measured inside each node netns; reference and podnet interleaved pod by pod.\n\n"
            + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
