"""podnet.kube: the Kubernetes API layer shared by the proxy, DNS, CNI daemon, policy engine and lab.

It also owns the vocabulary every package imports instead of re-declaring it: label and
annotation names (:mod:`.names`), the configuration error (:mod:`.errors`), Go durations and the
one duration flag type (:mod:`.durations`), and the binaries' log/verbosity/version shape
(:mod:`.logsetup`). Import rule: no other podnet package but the host plumbing below it, ``podnet.host``
(tests/test_import_layers.py).

Test support for every package lives in :mod:`podnet.kube.testing` (the one ``FakeInformer`` and
``FakeClock``); each other package keeps its own fakes in its ``testing`` module, and product code
never imports a ``testing`` module (tests/test_fakes_protocols.py).
"""
