"""A lab node's runtime: the kubelet, pod sandboxes, CNI execution, the pods' workload.

Data flow::

    kubelet.Kubelet (S; one process per node, entered into the node's netns with host.nsenter)
        registers its Node (nodeInfo from hostinfo: the host's kernel, machine-id, boot_id),
        lists+watches Pods bound to it (podnet.kube.client / watch)
      --> sandbox.Sandbox (S) per Pod: netns + resolv.conf, CNI ADD, the container process; destroy
          undoes exactly what was done, in reverse
            cniexec (S): the conflist's plugin chain exec'd as libcni does (ADD in order, DEL reversed)
            podserver (S; runs inside the pod's netns): TCP/UDP echo and HTTP, reporting the peer it saw
            podlogs: one log file per container instance, kubelet's /var/log/pods layout
      --> the Pod's status (IPs, phase, Ready from its readiness target) patched back to the API server

Public surface: ``kubelet.Kubelet``/``kubelet.main`` (``python -P -m podnet.netlab.node.kubelet``),
``kubelet.pod_command``, ``sandbox.Sandbox``, ``cniexec.add``/``delete``, ``podserver.PodServer``.
Fakes: none; tests run real namespaces and the lab API server.

Import rule: podnet.kube, host and node itself; never apiserver (it is reached over HTTP), lab,
check, picture or commands.
"""
