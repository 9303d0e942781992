"""podnet-cni: the CNI plugin a runtime execs for every pod, and the warm per-node daemon behind it.

Data flow (pure modules marked P, side effects S)::

    runtime --exec--> shim (stdlib Python, cni/shim.py; or the static C shim, cni/shim.c)
        --unix socket: CNI_* env + stdin--> daemon.Daemon (S: one process per node)
            skel.dispatch (P: verb, env and config validated as the Go skel does; spec error codes)
            plugin.Plugin (one keyed_lock per (container ID, ifname)):
                ipam.Ipam over ipam_store (S: SQLite WAL under flock) + requested (P: runtime-asked IPs, MAC)
                policy_hook (S: waits for the node's policy engine before the pod is plumbed)
                netops.add_pod / del_pod (S: veth, addresses, routes through rtnl's batched netlink)
            types + version (P: results built as 1.1.0, converted down to the config's version)
        <-- stdout bytes + exit code
    Node informer (podnet.kube) --> overlay.plan (P: per peer host-gw or VXLAN routes, neighbours,
        FDB entries, route MTUs) --> overlay / routes apply (S), re-checked periodically
    route exceptions + raw ICMP "too big" (pmtu, S) --> overlay.plan_path_mtus (P) --> route MTUs per peer
    antispoof.restore_text (P: raw-table rpfilter jump per family) --> antispoof.ensure: apply + repair (S)
    health (S: /healthz, /livez, /metrics)      install (S: binary + conflist, write then rename)

Host plumbing (entering a pod's namespace, the health endpoint's socket, signals) is
:mod:`podnet.host`'s; the command line is flags -> the frozen ``daemon.Options`` -> ``daemon.run``.
Tests drive the same code with the fakes in :mod:`podnet.cni.testing` (FakeNetOps, FakeOverlayOps,
MemoryStore), each checked against its Protocol, and in real network namespaces.
"""
