"""Host plumbing shared by every podnet package: named network namespaces, entering one with setns, background processes.

Public surface:

- :mod:`.netns`: ``Netns``/``NetnsPool`` (prefixed namespaces, veth pairs, ``sweep`` by prefix),
  ``run`` (``ip`` commands), ``list_netns``, ``unique_name``;
- :mod:`.nsenter`: ``enter`` (the process's main thread), ``inside`` and ``listening_socket``
  (switch the calling thread, bind, switch back), ``netns_path``;
- :mod:`.procs`: ``spawn`` (pid file + log + the ``PODNET_LAB`` marker), ``stop``/``stop_all``
  (signal only marked processes), ``find_lab_processes`` (from /proc after a crash).

All side effects, on namespaces and processes the caller names; nothing here touches the root
namespace's routes, iptables or sysctls. Fakes: none (tests use real ``pnt-`` namespaces).

Import rule: the standard library only (no podnet, no third-party package), so every podnet
package may import host.
"""
