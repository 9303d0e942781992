"""The configuration error every podnet binary reports the same way.

:class:`ConfigError` is raised for anything a binary cannot run with: a kubeconfig that cannot
be used, an exec credential block that can never work, a flag or configuration file value
(``podnet.proxy.config`` raises it too). ``str()`` is one line naming the problem; the binaries
turn it into one log line and exit status 2 (``podnet.kube.logsetup.config_error``).
It lives alone so every kube module (kubeconfig, its merge rules, exec credentials) raises it
without an import cycle.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """The configuration cannot be used (missing file, unknown context, bad value, ...)."""
