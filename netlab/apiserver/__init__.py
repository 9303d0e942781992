"""The lab API server: kube-apiserver's REST wire protocol plus its controllers, in one asyncio process.

Data flow (pure functions marked P; everything else works on the store's state)::

    HTTP request --> apihandlers (aiohttp)  -- body: JSON, or kproto (P) for kubectl's protobuf
        apikinds            which resource, URL placement, discovery documents
        fieldvalidation + fieldschema   ?fieldValidation= (unknown / repeated fields)
        patch (P)           merge, strategic merge and JSON patch
        selectors (P)       label and field selectors
      --> registry          defaults, then services + allocators: ClusterIPs, NodePorts;
                            validation with podnet.kube.objects; two-phase (prepare, commit)
      --> apistore          resourceVersions, event history, watchers; optional state file
            post-commit hooks: controllers (pod CIDRs; endpointslices (P) per Service), scheduler
      --> apiwatch          newline-delimited watch events, bookmarks; tables (P) for kubectl's as=Table
    server.LabApiServer wires these together; apirunner runs it listening both in the root
    namespace and inside the lab's underlay namespace (``python -P -m podnet.netlab.apiserver.apirunner``).

Public surface: ``server.LabApiServer`` (+ ``add_arguments``/``run`` for ``podnet lab apiserver``),
``apistore.Store``, ``registry.Registry``, ``apirunner.main``. Fakes: none; tests start a real
``LabApiServer`` on 127.0.0.1.

Import rule: podnet.kube, host and apiserver itself; never node, lab, check, picture or commands.
"""
