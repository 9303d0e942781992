"""netlab: multi-node Kubernetes labs in network namespaces, and the lab API server they run.

Layers, bottom to top, all on ``podnet.host`` (namespaces, setns, background processes) and
``podnet.kube`` (each subpackage's ``__init__`` states what it may import;
tests/test_import_layers.py enforces it)::

    apiserver/  the lab kube-apiserver + its controllers (process)  kube, host
    node/       the lab kubelet, pod sandboxes, the pods' workload  kube, host
    lab/        plan (P), wires, bring-up, teardown, state          kube, host
    check/      the end-to-end check table                          kube, host, lab
    picture/    a running lab as an SVG picture                     kube, host, lab
    commands/   the ``podnet`` command and ``lab demo``             everything above

The layers meet as processes, never as imports: ``lab up`` starts ``apiserver.apirunner``,
``node.kubelet`` and podnet's own cni/proxy/dns console scripts with ``python -P -m`` or by
script name, and talks to them over the Kubernetes API (podnet.kube.client) and the lab's
files. netlab imports none of podnet's cni, proxy, dns or policy packages.

Nothing is re-exported here: import modules by their full path
(``from podnet.netlab.lab import topology``), so importing one layer never loads another.
"""
