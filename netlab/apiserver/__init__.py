"""The lab API server: kube-apiserver's REST wire protocol plus its controllers, in one asyncio process.

Data flow (pure functions marked P; everything else works on the store's state)::

    HTTP(S) request --> authn: a --token-auth-file token or a TokenRequest token (tokens), else 401
                        (public-info paths open)
      --> authz: Node authorizer (nodeauthz), then RBAC (authz, P) over the stored Role/ClusterRole/
          (Cluster)RoleBinding objects (rbacstore: built-in roles and --rbac-file seeded at start), else 403
      --> admission on writes: NodeRestriction, RBAC escalation prevention (admission)
      --> apihandlers (aiohttp)  -- body: JSON, or kproto (P) for kubectl's protobuf
        apikinds            which resource, URL placement, discovery documents
        storedkinds (P)     validation of the kinds not parsed into frozen types (ConfigMap, Secret,
                            ServiceAccount, Event, Endpoints, apps/v1, RBAC, policy/v1
                            PodDisruptionBudget); RBAC objects written through the API are the
                            authorisation policy (rbacstore)
        scale (P)           the scale subresource of Deployments and ReplicaSets
        fieldvalidation + fieldschema   ?fieldValidation= (unknown / repeated fields)
        patch (P)           merge, strategic merge and JSON patch
        apply (P)           server-side apply (application/apply-patch+yaml), managedFields, conflicts
        tokens              serviceaccounts/NAME/token (TokenRequest): HS256 JWTs bound to a Pod
        openapi (P)         /openapi/v3 documents (kubectl explain)
        accessreview        selfsubjectaccessreviews (kubectl auth can-i)
        selectors (P)       label and field selectors
      --> registry          defaults, the ServiceAccount admission plugin on Pod creates (serviceaccounts
                            (P): serviceAccountName default, the kube-api-access-* projected volume), then
                            services + allocators: ClusterIPs, NodePorts;
                            validation with podnet.kube.objects; two-phase (prepare, commit)
      --> apistore          resourceVersions, event history, watchers; optional state file
            post-commit hooks: serviceaccounts (``default`` ServiceAccount and ``kube-root-ca.crt`` in
            every namespace), controllers (pod CIDRs; endpointslices (P) per Service), scheduler
            (with its ``Scheduled`` Events),
            appcontrollers: replicasets, deployments, daemonsets, endpoints (P each; workloads (P)
            their shared actions and helpers), garbage collection of owned ReplicaSets and Pods
      --> apiwatch          newline-delimited watch events, bookmarks; tables (P) for kubectl's as=Table
    pods/NAME/log --> podlogs: the lab kubelets' log files (kubelet's /var/log/pods layout)
    server.LabApiServer wires these together; apirunner runs it listening both in the root
    namespace and inside the lab's underlay namespace (``python -P -m podnet.netlab.apiserver.apirunner``).

Security: in a lab the server serves HTTPS only (a lab CA generated at ``lab up``) and answers 401
to every request without one of the lab's tokens, on the root loopback listener and on the
underlay one that pods can reach, and authorises every request with RBAC: the rules of
deploy/podnet.yaml (seeded into the store, editable through the API) for podnet's service
accounts, ``system:masters`` (the admin) allowed everything, and the lab kubelets by the Node
authorizer and NodeRestriction: a kubelet reads only the ConfigMaps, Secrets and service-account
tokens its own pods reference and modifies only its own Node and the pods bound to it.
A lab pod's ``command`` still runs as root on the host's filesystem, so such a command can read
``/run/podnet/<lab>/credentials`` (and anything else) on the host: the tokens keep out network
clients (a pod's workload talking to the API, other hosts' users), not code the lab runs as root.
Standalone (``podnet lab apiserver``) without ``--token-auth-file`` serves everyone, on loopback by default;
authorisation only with ``--authorization-mode RBAC [--rbac-file FILE]`` (and a token file).

Public surface: ``server.LabApiServer`` (+ ``add_arguments``/``run`` for ``podnet lab apiserver``),
``apistore.Store``, ``registry.Registry``, ``apirunner.main``. Fakes: none; tests start a real
``LabApiServer`` on 127.0.0.1.

Import rule: podnet.kube, host and apiserver itself; never node, lab, check, picture or commands.
"""
