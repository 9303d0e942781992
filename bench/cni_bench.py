"""podnet-cni vs Debian's reference bridge + host-local, side by side in one run.

    .venv/bin/python -P bench/cni_bench.py [--pods 50] [--held 1000] [--concurrent 100] [--out bench/results/cni.md]
    .venv/bin/python -P bench/cni_bench.py --profile bench/results/cni_profile.md [--pods 30] [--held 0] [--label ...]
    .venv/bin/python -P bench/cni_bench.py --curve 0,250,500,1000 [--held-pods 20] [--plot bench/results/cni_add_curve.png]

Everything runs in network namespaces this script creates (prefix
``pnt-cni-bench-``) and removes: one "node" netns per plugin (the reference's
bridge and host-local state, and podnet's daemon, live there), plus a fresh
pod netns per ADD. Timings are wall times around the plugin exec, measured by
a worker process running *inside* the node netns (as a runtime would), with
reference and podnet interleaved pod by pod so machine noise hits both alike.

Measured: plugin exec baseline (VERSION; podnet's shim in each install form),
ADD and DEL (median, p99) over N pods each into a fresh netns (also through the
opt-in compiled shim, and the statically linked one of ``--form static``, when a
C compiler and libc.a exist), ADD/DEL with 1000 reservations held, and the wall
time of 100 concurrent ADDs (Python shim and static shim); the load average at
start and end.

``--curve N,N,...``: ADD (and DEL) against the number of reservations held, podnet (Python shim,
and the static C shim when it builds) beside the reference, interleaved pod by pod at each level;
reservations are added cumulatively (podnet: real attachments; reference: host-local's files), and
``--plot PATH`` draws the ADD medians as a PNG (bench/plot.py, the bench extra).

``--profile``: the daemon's share instead, broken down: a daemon in one process
inside a node netns, a burst of sequential ADDs then DELs over its socket; a
wall-clock span per step (:data:`SPANS`, without cProfile) and then cProfile of
each of its threads; appended as a markdown section to the given file.
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
from podnet.host.netns import NetnsPool

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
    if op == "profile":
        return profile_daemon(job)
    raise ValueError(op)


# ----------------------------------------------------------------------------- profile (inside a node netns)

# Functions timed per call while profiling, as "module:qualname"; missing ones are skipped, so the
# list covers the code before and after a change.
SPANS = [
    "podnet.cni.daemon:Daemon.handle",
    "podnet.cni.skel:dispatch",
    "podnet.cni.plugin:KernelNetOps.validate_netns",
    "podnet.cni.ipam:Allocator.allocate",
    "podnet.cni.ipam:Allocator.release",
    "podnet.cni.ipam_store:SqliteStore.reserve",
    "podnet.cni.ipam_store:SqliteStore.release",
    "podnet.cni.netops:add_pod",
    "podnet.cni.netops:del_pod",
    "podnet.cni.netops:open_netns",
    "podnet.cni.netops:netlink_in",
    "podnet.cni.rtnl:setns",
    "podnet.host.nsenter:setns",
    "podnet.cni.netops:_create_veth",
    "podnet.cni.netops:_delete_link",
    "podnet.cni.netops:read_sysctl",
    "podnet.cni.netops:write_sysctl",
    "podnet.cni.rtnl:Rtnl.batch",
    "podnet.cni.rtnl:Rtnl.request",
    "podnet.cni.rtnl:in_netns",
    "pyroute2:IPRoute.__init__",
    "pyroute2:IPRoute.link",
    "pyroute2:IPRoute.link_lookup",
    "pyroute2:IPRoute.addr",
    "pyroute2:IPRoute.route",
    "pyroute2:IPRoute.close",
]


def _wrap_spans(spans: dict[str, list[float]]) -> None:
    import asyncio
    import functools
    import importlib
    import inspect

    for ref in SPANS:
        mod_name, _, qual = ref.partition(":")
        try:
            owner = importlib.import_module(mod_name)
            *path, attr = qual.split(".")
            for part in path:
                owner = getattr(owner, part)
            fn = inspect.getattr_static(owner, attr)
        except (ImportError, AttributeError):
            continue
        raw = fn.__func__ if isinstance(fn, staticmethod) else fn
        out = spans.setdefault(ref, [])
        if asyncio.iscoroutinefunction(raw):
            async def wrapper(*a, __f=raw, __o=out, **kw):
                t0 = time.perf_counter()
                try:
                    return await __f(*a, **kw)
                finally:
                    __o.append(time.perf_counter() - t0)
        else:
            def wrapper(*a, __f=raw, __o=out, **kw):
                t0 = time.perf_counter()
                try:
                    return __f(*a, **kw)
                finally:
                    __o.append(time.perf_counter() - t0)
        functools.update_wrapper(wrapper, raw)
        setattr(owner, attr, staticmethod(wrapper) if isinstance(fn, staticmethod) else wrapper)
        if mod_name == "podnet.cni.netops":  # KernelNetOps holds its own references
            from podnet.cni import plugin

            if getattr(plugin.KernelNetOps, attr, None) is raw:
                setattr(plugin.KernelNetOps, attr, staticmethod(wrapper))


def profile_daemon(job: dict) -> dict:
    """A daemon in this process (one netops worker thread, each thread under its own cProfile) and a
    client thread sending sequential ADDs, then DELs; returns per-step spans and the top functions."""
    import asyncio
    import cProfile
    import io
    import pstats
    import threading

    from podnet.cni import daemon as dmod, shim

    spans: dict[str, list[float]] = {}
    _wrap_spans(spans)
    profs: dict[str, cProfile.Profile] = {}

    def start_worker_prof() -> None:
        if job["cprofile"]:
            p = profs["netops worker thread"] = cProfile.Profile()
            p.enable()

    async def main() -> dict:
        opts = dmod.Options(job["socket"], "bench", job["data_dir"], pod_cidr=[job["cidr"]], workers=1)
        d = dmod.Daemon(opts)
        d.pool.shutdown()
        d.pool = d.plugin.pool = ThreadPoolExecutor(1, thread_name_prefix="netops", initializer=start_worker_prof)
        await d.start()
        d.plugin.ready.routes_synced = True
        loop = asyncio.get_running_loop()
        conf = json.dumps(job["conf"]).encode()

        def burst(verb: str, pods: list | None = None) -> list[float]:
            ms = []
            for cid, ns, *ifname in job["pods"] if pods is None else pods:
                t0 = time.perf_counter()
                code, res = shim.call_daemon(job["socket"], shim.encode_request(plugin_env(verb, cid, ns, *ifname),
                                                                                conf))
                ms.append((time.perf_counter() - t0) * 1000)
                if code:
                    raise RuntimeError(res)
            return ms

        await loop.run_in_executor(None, burst, "ADD", job["held"])  # reservations held throughout
        await loop.run_in_executor(None, burst, "ADD")  # warm-up: imports, first sockets, first SQLite pages
        await loop.run_in_executor(None, burst, "DEL")
        for v in spans.values():
            v.clear()
        main_prof = cProfile.Profile()
        if job["cprofile"]:
            profs["event loop thread"] = main_prof
            main_prof.enable()
        try:
            add = await loop.run_in_executor(None, burst, "ADD")
            dele = await loop.run_in_executor(None, burst, "DEL")
        finally:
            main_prof.disable()
        if job["cprofile"]:
            await loop.run_in_executor(d.pool, lambda: profs["netops worker thread"].disable())
        await d.close()
        return {"add": add, "del": dele}

    res = asyncio.run(main())
    res["spans"] = {k: [x * 1000 for x in v] for k, v in spans.items() if v}
    tops = {}
    for name, p in profs.items():
        buf = io.StringIO()
        pstats.Stats(p, stream=buf).sort_stats("tottime").print_stats(18)
        tops[name] = buf.getvalue()
    res["profiles"] = tops
    res["threads"] = threading.active_count()
    return res


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


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def profile_main(a: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="podnet-cni-prof-"))
    pool = NetnsPool("pnt-cni-bench-")
    before = load()
    try:
        node = pool.netns("prof")
        pods = [pool.netns("f") for _ in range(a.pods)]
        holders = [pool.netns("h") for _ in range((a.held + 249) // 250)]
        held = [[f"held{k}", holders[k % len(holders)].path, f"e{k}"] for k in range(a.held)]
        conf = {"cniVersion": "1.0.0", "name": "bench", "type": "podnet-cni", "socket": str(tmp / "cni.sock")}
        job = {"op": "profile", "binary": "", "conf": conf, "socket": str(tmp / "cni.sock"), "cidr": "10.244.0.0/20",
               "pods": [[f"f{i}", p.path] for i, p in enumerate(pods)], "held": held}
        # spans without cProfile (its per-call cost would inflate pyroute2's many small calls), then cProfile
        out = in_netns(node.name, {**job, "data_dir": str(tmp / "data1"), "cprofile": False})
        out["profiles"] = in_netns(node.name, {**job, "data_dir": str(tmp / "data2"), "cprofile": True})["profiles"]
    finally:
        pool.close()
        shutil.rmtree(tmp, ignore_errors=True)
    after = load()
    add_med = statistics.median(out["add"])
    lines = [f"## {a.label or 'profile'} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"load average {before} -> {after})", "",
             f"`.venv/bin/python -P bench/cni_bench.py --profile FILE --pods {a.pods} --held {a.held}`: "
             f"{a.held} reservations (with their veths) held throughout; a daemon in one process "
             f"inside a node netns, one netops worker thread, {a.pods} sequential ADDs then {a.pods} DELs over the "
             "socket (no shim exec), each into a fresh pod netns, after one warm-up round. Spans: wall clock per call "
             "in a run without cProfile; then a second run under cProfile (per thread).", "",
             f"Client-side round trip: ADD median {add_med:.2f} ms, DEL median {statistics.median(out['del']):.2f} ms.",
             "", "| step (per call) | calls per ADD+DEL | median ms | total ms | share of ADD+DEL wall |",
             "|---|---|---|---|---|"]
    wall = sum(out["add"]) + sum(out["del"])
    for name, ms in sorted(out["spans"].items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"| `{name}` | {len(ms) / a.pods:.1f} | {statistics.median(ms):.3f} | {sum(ms):.1f} | "
                     f"{100 * sum(ms) / wall:.0f}% |")
    for thread, text in out["profiles"].items():
        lines += ["", f"cProfile, {thread} (top 18 by own time):", "", "```", text.strip(), "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    path = Path(a.profile)
    path.write_text((path.read_text() + "\n" if path.exists() else "") + text)
    return 0


def curve_main(a: argparse.Namespace) -> int:
    """ADD/DEL medians at each reservation level in ``a.curve``; see the module docstring."""
    import ipaddress

    levels = sorted({int(x) for x in a.curve.split(",")})
    tmp = Path(tempfile.mkdtemp(prefix="podnet-cni-curve-"))
    pool = NetnsPool("pnt-cni-bench-")
    daemon = None
    before, started = load(), time.time()
    med: dict[str, list[tuple[int, float]]] = {}
    dels: dict[str, list[tuple[int, float]]] = {}
    try:
        ref_ns, pn_ns = pool.netns("ref"), pool.netns("pn")
        cidr = "10.244.0.0/20"
        rconf = ref_conf(str(tmp / "ipam"), cidr)
        install.install(str(tmp / "bin"), str(tmp / "net.d"), str(tmp / "cni.sock"))
        pbin = str(tmp / "bin" / "podnet-cni")
        runs = {"reference bridge+host-local": (ref_ns, "/usr/lib/cni/bridge", rconf)}
        pconf = {"cniVersion": "1.0.0", "name": "bench", "type": "podnet-cni", "socket": str(tmp / "cni.sock")}
        runs["podnet, Python shim"] = (pn_ns, pbin, pconf)
        try:
            install.build_shim(tmp / "podnet-cni-static", static=True)
            install.install(str(tmp / "bin-static"), str(tmp / "net.d-static"), str(tmp / "cni.sock"), form="static",
                            static_shim=str(tmp / "podnet-cni-static"), portmap="off")
            runs["podnet, static C shim"] = (pn_ns, str(tmp / "bin-static" / "podnet-cni"), pconf)
        except RuntimeError as e:
            print(f"no static shim: {e}", file=sys.stderr)
        log = open(tmp / "daemon.log", "wb")
        daemon = pn_ns.popen(str(Path(PY).parent / "podnet-cni"), "daemon", "--socket", str(tmp / "cni.sock"),
                             "--node-name", "bench", "--data-dir", str(tmp / "data"), "--pod-cidr", cidr,
                             stdout=log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if (tmp / "cni.sock").exists():
                break
            time.sleep(0.05)
        ipam_dir = tmp / "ipam" / "bench"
        ipam_dir.mkdir(parents=True, exist_ok=True)
        net = ipaddress.ip_network(cidr)
        holders: list = []
        held = 0
        for level in levels:
            for k in range(held, level):
                (ipam_dir / str(net.network_address + 2 + k)).write_text(f"held{k}\r\neth0")
            while len(holders) * 250 < level:
                holders.append(pool.netns("h"))
            jobs = [[f"held{k}", holders[k // 250].path, f"e{k % 250}"] for k in range(held, level)]
            if jobs:
                in_netns(pn_ns.name, {"op": "add_only", "binary": pbin, "conf": pconf, "pods": jobs})
            held = level
            got: dict[str, dict[str, list[float]]] = {w: {"add": [], "del": []} for w in runs}
            for i in range(a.held_pods):
                for which, (node, binary, conf) in runs.items():
                    pod = pool.netns("q")
                    out = in_netns(node.name, {"op": "add_del", "binary": binary, "conf": conf,
                                               "pods": [[f"q{level}-{i}-{len(which)}", pod.path]]})
                    got[which]["add"] += out["add"]
                    got[which]["del"] += out["del"]
                    pool.made.remove(pod)
                    subprocess.run(["ip", "netns", "del", pod.name], check=True)
            for which, g in got.items():
                med.setdefault(which, []).append((level, statistics.median(g["add"])))
                dels.setdefault(which, []).append((level, statistics.median(g["del"])))
            print(f"{level:>5} held: " + "; ".join(f"{w} ADD {statistics.median(g['add']):.1f} ms DEL "
                                                   f"{statistics.median(g['del']):.1f} ms" for w, g in got.items()),
                  flush=True)
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait(10)
        pool.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ref = med["reference bridge+host-local"]
    for which, pts in med.items():
        print(f"{which}: ADD " + ", ".join(f"{lv}: {ms:.1f} ms ({ms / r:.2f}x)" for (lv, ms), (_, r) in zip(pts, ref)))
    print(f"load average {before} at the start, {load()} at the end; {a.held_pods} pods per level and plugin; "
          f"{time.time() - started:.0f} s")
    if a.plot:
        sys.path.insert(0, str(HERE.parent))  # bench/ only
        from plot import curves

        curves(a.plot, f"CNI ADD against reservations held (median of {a.held_pods} pods per point)",
               "reservations held on the node", "ms per ADD (plugin exec, wall)", med,
               anchors=("reference bridge+host-local",),
               note=f"bench/cni_bench.py --curve, fresh pod netns per ADD, load {before.split()[0]} at start, 2-core VM")
        print(f"plot: {a.plot}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--held", type=int, default=1000)
    ap.add_argument("--held-pods", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--out", default="")
    ap.add_argument("--profile", default="", metavar="FILE",
                    help="instead of the comparison: profile the daemon during a burst of --pods ADDs then DELs "
                         "(cProfile per thread, wall-clock span per step) and write the tables to FILE")
    ap.add_argument("--label", default="", help="a title for the --profile section")
    ap.add_argument("--curve", default="", metavar="N,N,...",
                    help="instead of the comparison: ADD/DEL against these numbers of reservations held")
    ap.add_argument("--plot", default="", metavar="PATH", help="with --curve: write the ADD curve as a PNG")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(json.loads(sys.stdin.read()))))
        return 0
    if a.profile:
        return profile_main(a)
    if a.curve:
        return curve_main(a)

    tmp = Path(tempfile.mkdtemp(prefix="podnet-cni-bench-"))
    pool = NetnsPool("pnt-cni-bench-")
    daemon = None
    load_before = load()
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
        s_dir = tmp / "bin-static"  # the real-cluster form: a statically linked build of cni/shim.c, copied
        sbin = ""
        try:
            install.build_shim(tmp / "podnet-cni-static", static=True)
            install.install(str(s_dir), str(tmp / "net.d-static"), str(tmp / "cni.sock"), form="static",
                            static_shim=str(tmp / "podnet-cni-static"), portmap="off")
            sbin = str(s_dir / "podnet-cni")
        except RuntimeError as e:
            print(f"no static shim: {e}", file=sys.stderr)
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
        v_ref, v_pn, v_src, v_c, v_s = [], [], [], [], []
        for _ in range(5):  # interleaved rounds
            v_ref += in_netns(ref_ns.name, {"op": "version", "binary": "/usr/lib/cni/bridge", "conf": {}, "n": 10})["ms"]
            v_pn += in_netns(pn_ns.name, {"op": "version", "binary": pbin, "conf": {}, "n": 10})["ms"]
            v_src += in_netns(pn_ns.name, {"op": "version", "binary": str(src_dir / "podnet-cni"), "conf": {},
                                            "n": 10})["ms"]
            if have_cc:
                v_c += in_netns(pn_ns.name, {"op": "version", "binary": cbin, "conf": {}, "n": 10})["ms"]
            if sbin:
                v_s += in_netns(pn_ns.name, {"op": "version", "binary": sbin, "conf": {}, "n": 10})["ms"]
        c_txt = f" / {statistics.median(v_c):.1f} (opt-in C)" if v_c else ""
        c_txt += f" / {statistics.median(v_s):.1f} (static C)" if v_s else ""
        rows.append(("exec baseline (VERSION), median ms", f"{statistics.median(v_ref):.1f}",
                     f"{statistics.median(v_pn):.1f} (bytecode) / {statistics.median(v_src):.1f} (source){c_txt}", ""))

        # 2. ADD/DEL, each into a fresh netns, interleaved
        runs = {"ref": (ref_ns, "/usr/lib/cni/bridge", rconf), "pn": (pn_ns, pbin, pconf)}
        if have_cc:
            runs["c"] = (pn_ns, cbin, pconf)
        if sbin:
            runs["static"] = (pn_ns, sbin, pconf)
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
        for form, label in (("c", "the opt-in C shim"), ("static", "the static C shim (--form static)")):
            for verb in ("add", "del") if form in got else ():
                rm, cm = statistics.median(got["ref"][verb]), statistics.median(got[form][verb])
                rows.append((f"{verb.upper()} median ms, podnet with {label} (same pods loop)", f"{rm:.1f}",
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
        for which in ("ref", "pn", "static") if sbin else ("ref", "pn"):
            pods = [pool.netns("c") for _ in range(a.concurrent)]
            node, binary, conf = {"ref": (ref_ns, "/usr/lib/cni/bridge", rconf), "pn": (pn_ns, pbin, pconf),
                                  "static": (pn_ns, sbin, pconf)}[which]
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
        if "static" in walls:
            rows.append((f"{a.concurrent} concurrent ADDs with the static C shim: wall ms (per-call median)",
                         f"{walls['ref']['wall']:.0f} ({statistics.median(walls['ref']['per']):.0f})",
                         f"{walls['static']['wall']:.0f} ({statistics.median(walls['static']['per']):.0f})",
                         f"{walls['static']['wall'] / walls['ref']['wall']:.2f}x"))
        shebang = Path(pbin).read_text().splitlines()[0]  # read before the temp dir goes
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait(10)
        pool.close()
        shutil.rmtree(tmp, ignore_errors=True)

    table = ["| measurement | reference bridge+host-local | podnet-cni | podnet/ref |", "|---|---|---|---|"]
    table += [f"| {m} | {r} | {p} | {x} |" for m, r, p, x in rows]
    text = f"Load average (1, 5, 15 min) {load_before} at the start, {load()} at the end.\n\n" + "\n".join(table)
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
