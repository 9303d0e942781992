"""podnet.policy: NetworkPolicy (networking.k8s.io/v1), AdminNetworkPolicy and
BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1) enforced on every node.

``podnet-policy`` runs on every node next to the proxy. It watches
NetworkPolicies, Pods and Namespaces (kube informers), and the two admin kinds
when the API serves them, computes per local pod the ingress and egress
verdicts as pure data (:mod:`.model`; :mod:`.incremental` recomputes only the
pods a change can affect), renders them as
ipsets and filter-table chains (:mod:`.render`) and applies them in the order
that never opens a gap (:mod:`.programmer`, over the :mod:`.kernel` protocol).
:mod:`.engine` paces recomputation like the proxy's min-sync period, and
:mod:`.cli` is the binary.

Services and policy: the filter FORWARD hook runs after the proxy's DNAT
(PREROUTING) and before any SNAT (POSTROUTING), so ingress is judged on the
backend pod's own address and port and egress on the client pod's own source.
A NodePort client reaching a backend on the same node keeps its own address
in FORWARD even with ``externalTrafficPolicy: Cluster`` (the masquerade happens
after); a client whose packet was forwarded by another node with eTP Cluster
arrives with that node's address as source (SNAT there), so only an ipBlock
covering node addresses admits it; with eTP Local the client's address is
kept end to end.

Chains are ``PODNET-POL-*`` and ``PODNET-NP-*``, sets ``PODNET-PS<family>-*``
(and their ``PODNET-PT<family>-*`` swap twins): a namespace of names the
proxy never writes or cleans up.
"""
