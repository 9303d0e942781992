"""podnet-proxy: a kube-proxy-compatible iptables service proxy, one per node.

Data flow (pure modules marked P, side effects S)::

    informers (podnet.kube) --> proxier.Proxier handlers --> tracker.ChangeTracker      (P)
        sync.SyncRunner (S: pacing) --> proxier.FamilyProxier.sync, per IP family:
            snapshot.service_fragments (P) = model (P) + endpoints.categorize (P) + rules.service_rules (P)
            rules.assemble (P) + dispatch.build_tree (P)  -> desired {table: {chain: rules}}
            render.plan / render.render (P)                -> iptables-restore text (diff or full)
            iptables.IptablesRunner (S)                    -> one atomic iptables-restore --noflush
        conntrack.Reconciler (S), healthcheck (S), metrics, daemon (wiring), cli, node (S), cleanup (S)

Tests drive the same code with fake_iptables.FakeIptables, conntrack.FakeConntrack,
testing.FakeInformer / FakeClock, and trace.Tracer, which walks the parsed rules like the
kernel would for the first packet of a connection.

What is different from kube-proxy on purpose: chains are named ``PODNET-*`` (never touching
``KUBE-*``); ClusterIP/external-IP dispatch is a radix tree on the destination (dispatch.py)
instead of one linear chain; partial syncs write only the chains whose rules changed; the
canary is checked in every table, not only mangle.
"""
