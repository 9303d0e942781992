"""podnet.kube: the Kubernetes API layer shared by the proxy, DNS and CNI daemon.

Test support for every package lives in :mod:`podnet.kube.testing` (the one ``FakeInformer`` and
``FakeClock``); each other package keeps its own fakes in its ``testing`` module, and product code
never imports a ``testing`` module (tests/test_fakes_protocols.py).
"""
