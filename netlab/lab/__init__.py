"""A lab's life: the topology and its plan, the wires, bring-up, teardown and the saved state.

Data flow (pure modules marked P, side effects S)::

    flags / topology file --> topology.validate (P) --> topology.plan (P): every name and address
    lab_up --> bringup.up (S), step by step with progress lines (progress: one updating line on a
               terminal, plain lines in a log); Ctrl-C/SIGTERM (interrupt) or a failure rolls back
               through teardown.down unless --retain
        fabric (S: underlay bridges, the router of routed layouts, node/outside/upstream namespaces
                via host.netns, every sysctl the lab relies on written in each)
        the API server, upstream DNS, one kubelet per node (processes via host.procs)
        install (P: deploy/podnet.yaml with the lab's ConfigMap values; S: applied through the API,
                 so podnet's daemons run only as the manifest's DaemonSet and Deployment pods)
        parts (P: each node's root for hostPath volumes, the image dir, the --cni reference anchor)
        manifests (P: the pods and Services the lab creates), written through podnet.kube.client
        labstate (S: <run-dir>/lab.json, so check/down/demo find the same plan)
    backends (P: the backend each node pair should use, and what a CNI daemon's log says it uses)
    lab_down --> teardown.down (S): processes, namespaces, files; from records or by marks after a crash

Public surface: ``topology.LabSpec``/``validate``/``plan``, ``bringup.up``, ``teardown.down``,
``backends.expected``/``reported``, ``interrupt.signals_raise``/``shielded``, ``fabric.sysctls``,
``labstate.load``/``save``, ``manifests``, and the ``lab_up``/``lab_down`` verbs
(``add_arguments``/``run``). Fakes: none.

Import rule: podnet.kube, host and lab itself. Other layers run as processes started by
bring-up (apiserver.apirunner, node.kubelet by ``-m`` path), never imported.
"""
