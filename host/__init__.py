"""Host and process plumbing shared by every podnet package.

Public surface:

- :mod:`.netns`: ``Netns``/``NetnsPool`` (prefixed namespaces, veth pairs, ``sweep`` by prefix),
  ``run`` (``ip`` commands), ``list_netns``, ``unique_name``;
- :mod:`.nsenter`: ``enter`` (the process's main thread), ``inside``, ``listening_socket`` and
  ``made_inside`` (switch the calling thread, make a socket, switch back), ``setns`` (by fd),
  ``exec_argv`` (the ``ip netns exec`` command line), ``netns_path``;
- :mod:`.procs`: ``spawn`` (pid file + log + the ``PODNET_LAB`` marker), ``stop``/``stop_all``
  (signal only marked processes), ``find_lab_processes`` (from /proc after a crash);
- :mod:`.addr`: ``split_hostport``/``join_hostport``/``listen_address``, the one host:port parser;
- :mod:`.serving`: ``HttpEndpoint``, health/ready/metrics paths on one aiohttp socket, the bound
  port public;
- :mod:`.loop`: ``stop_on_signals`` (SIGTERM/SIGINT), ``run`` (uvloop when installed),
  ``gc_paused``;
- :mod:`.tools`: ``run_tool`` (a host tool from the event loop: status, stdout, stderr; killed
  after a timeout);
- :mod:`.xtables`: ``detect_mode`` (the iptables backend this node's rules live in, by
  iptables-wrappers' rule), ``choose_mode``, ``HINT_CHAINS``;
- :mod:`.podman`: ``Store`` (which podman store holds podnet's image, and the flags this machine's
  podman needs), ``save``/``load`` in a lab's run dir, ``lab_containers``/``remove_lab`` (every
  container labelled with a lab's name).

Data flow: none of its own; callers pass names, fds, addresses and handlers in. :mod:`.addr` is
pure; the rest is the side-effect layer, acting only on namespaces, processes and sockets the
caller names; nothing here touches the root namespace's routes, iptables or sysctls. Fakes: none
(tests use real ``pnt-`` namespaces and ephemeral ports on 127.0.0.1).

Import rule: the standard library plus podnet's declared runtime dependencies (aiohttp for
:mod:`.serving`, uvloop for :mod:`.loop`), and no other podnet package, so every podnet package may
import host.
"""
