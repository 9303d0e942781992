"""podnet-proxy: a kube-proxy-compatible iptables service proxy, one per node.

Data flow (pure modules marked P, side effects S)::

    informers (podnet.kube) --> proxier.Proxier handlers --> tracker.ChangeTracker      (P)
        sync.SyncRunner (S: pacing) --> proxier.FamilyProxier.sync, per IP family:
            snapshot.service_fragments (P) = model (P) + endpoints.categorize (P) + rules.service_rules (P),
                every value and rule line re-checked by guard (P); a service that fails is skipped and counted
            rules.assemble (P) + dispatch.build_tree (P)  -> desired {table: {chain: rules}}
            render.plan / render.render (P)                -> iptables-restore text (diff or full)
            iptables.IptablesRunner (S)                    -> one iptables-restore --noflush (atomic per table)
        conntrack.Reconciler (S), healthcheck (S), metrics, daemon (wiring), cli, node (S), cleanup (S)

nftables mode (``--proxy-mode nftables``; iptables stays the default), same informer side::

        nft_proxier.NftFamilyProxier.sync, per IP family (plugs into proxier.Proxier):
            model (P) + endpoints.categorize (P) + nft_rules.service_nft (P) -> per-service fragments
            nft_rules.build_state (P)                       -> one table per family (table ip/ip6 podnet)
            nft_render.render_full / render_partial (P)     -> nft -f text, one transaction
            nft_run.NftRunner (S)                           -> one ``nft -f -`` per sync
        nft_count (S: kernel rule counts for the canary), nft_node (S: families, mode switch, cleanup)

Health and metrics endpoints, listen addresses, signals, the uvloop runner and the full sync's GC
pause are podnet.host's; the command line is kube-proxy's flags -> the frozen ``daemon.Config`` -> run.
Tests drive the same code with the fakes in proxy/testing.py (FakeIptables, FakeNft, FakeConntrack),
podnet.kube.testing's FakeInformer / FakeClock, and trace.Tracer (nft_trace.NftTracer for the nftables
table), which walks the parsed rules like the kernel would for the first packet of a connection.

What is different from kube-proxy on purpose: chains are named ``PODNET-*`` (never touching
``KUBE-*``); ClusterIP/external-IP dispatch is a radix tree on the destination (dispatch.py)
instead of one linear chain; partial syncs write only the chains whose rules changed;
every sync period one iptables-save per family is compared with what was applied (flushed
tables or chains, changed rule counts, deleted jumps), in every table, not only a canary in mangle.
"""
