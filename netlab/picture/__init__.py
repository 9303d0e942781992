"""A running lab as a picture: collect its topology, render it as a standalone SVG document.

Data flow::

    snapshot.collect (S: API objects through podnet.kube.client, node routes through ``ip netns exec``,
                      the backend per node pair from the CNI daemons' logs via lab.backends)
      --> svg.Topology (P: plain data) --> svg.render (P: deterministic SVG text, every text escaped)

Public surface: ``snapshot.collect``, ``svg.Topology`` and its views, ``svg.render``. Fakes: none;
``svg`` is tested on hand-built ``Topology`` values.

Import rule: podnet.kube, host, lab (the saved state and plan) and picture itself; svg imports
nothing but the standard library.
"""
