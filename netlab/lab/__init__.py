"""A lab's life: the topology and its plan, the wires, bring-up, teardown and the saved state.

Data flow (pure modules marked P, side effects S)::

    flags / topology file --> topology.validate (P) --> topology.plan (P): every name and address
    lab_up --> bringup.up (S), step by step with progress lines (progress):
        fabric (S: underlay bridge, node/outside/upstream namespaces via host.netns)
        the API server, upstream DNS, one kubelet per node (processes via host.procs)
        parts (command lines of podnet-cni/-proxy/-dns (P); usable: does the console script answer --help)
        manifests (P: the pods and Services the lab creates), written through podnet.kube.client
        labstate (S: <run-dir>/lab.json, so check/down/demo find the same plan)
    lab_down --> teardown.down (S): processes, namespaces, files; from records or by marks after a crash

Public surface: ``topology.LabSpec``/``validate``/``plan``, ``bringup.up``, ``teardown.down``,
``labstate.load``/``save``, ``manifests``, and the ``lab_up``/``lab_down`` verbs
(``add_arguments``/``run``). Fakes: none.

Import rule: podnet.kube, host and lab itself. Other layers run as processes started by
bring-up (apiserver.apirunner, node.kubelet by ``-m`` path), never imported.
"""
