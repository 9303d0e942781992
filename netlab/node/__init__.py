"""A lab node's runtime: the kubelet, pod sandboxes, containers, CNI execution, the pods' workload.

Data flow::

    kubelet.Kubelet (S; one process per node, entered into the node's netns with host.nsenter)
        registers its Node (nodeInfo from hostinfo: the host's kernel, machine-id, boot_id);
        a podnet.kube Informer keeps the Pods with spec.nodeName=<node> and calls observe()
      --> podspec.parse (P): the Pod as frozen data (containers, env, probes, ports, volumes);
          $(VAR) expansion and env resolution (downward API, ConfigMap/Secret keys) are pure
      --> sandbox.Sandbox (S) per Pod: netns + resolv.conf and CNI ADD with hostPort
          portMappings, or the node's netns for hostNetwork; destroy undoes it all in reverse
            cniexec (S): the conflist's plugin chain exec'd as libcni does (ADD in order, DEL
            reversed, runtimeConfig for declared capabilities)
      --> volumes.materialise (S): hostPath under the node's own root, emptyDir, ConfigMap,
          Secret, downwardAPI, projected (TokenRequest token, CA, namespace) as files, written
          as kubelet's AtomicWriter does (``..data`` symlink swap); volumes.refresh (S) re-syncs them
          while the pod runs, so changed ConfigMaps and Secrets reach it
      --> per container, in order (init containers first, each to completion):
            images (P): what the image runs (podnet's console scripts, or the echo server
            podserver on the declared ports)
            launch (S; the container's own process): a private mount namespace, an overlay of
            the host's / as its root, the volumes bound at their mountPaths, then exec
            probes (S): startup, liveness, readiness from the spec; crash-loop back-off restarts
            podlogs: one log file per container instance, kubelet's /var/log/pods layout
      --> the Pod's status (IPs, phase, conditions, container statuses) patched back
      --> events.Recorder (S): kubelet's Events (Pulled, Created, Started, Killing, BackOff,
          Unhealthy) posted without blocking, rate-limited per pod

Public surface: ``kubelet.Kubelet`` (``observe``, ``sync_once``, ``run``) and ``kubelet.main``
(``python -P -m podnet.netlab.node.kubelet``), ``podspec.parse``/``expand``/``resolve_env``,
``volumes.materialise``/``container_mounts``, ``images.argv``, ``sandbox.Sandbox``,
``cniexec.add``/``delete``, ``podserver.PodServer``, ``launch.main`` (``python -P -m
podnet.netlab.node.launch PLAN``).
Fakes: none; tests fake a kubelet's process and API steps by subclassing, and run real
namespaces with the lab API server (tests/lab/test_kubelet_netns.py).

Import rule: podnet.kube, host and node itself; never apiserver (it is reached over HTTP), lab,
check, picture or commands.
"""
