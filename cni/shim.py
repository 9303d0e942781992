"""podnet-cni plugin entry point: a standard-library-only shim that forwards to the node daemon.

The runtime execs this for every CNI call. It imports nothing but ``_socket``,
``posix`` and ``sys`` (``json`` alone costs ~10 ms on this machine, ``socket``
~10 ms, ``os`` ~1 ms, pyroute2 0.3-0.9 s), forwards the ``CNI_*`` environment and the raw
stdin to the per-node daemon over a unix socket (see
:mod:`podnet.cni.daemon` for the wire format), and writes back the daemon's
stdout and exit code. ``podnet-cni install`` copies this file to
``<bin-dir>/podnet-cni`` with a ``#!<python> -IS`` shebang (isolated mode, no
``site``), so it never depends on the virtualenv's import machinery.

Where the daemon is found: the ``socket`` key of the plugin's network config
(so several nodes on one machine each reach their own daemon), else
``PODNET_CNI_SOCKET`` baked in at install time, else ``/run/podnet/cni.sock``.

**Without a reachable daemon the shim answers error 11 (try again later)**
(STATUS answers 50, plugin not available), and does not try to do the work
itself. Reasons: the daemon is the single writer of the IPAM store (one
writer is what makes allocation crash-safe and duplicate-free without a lock
convoy); it alone knows the node's pod CIDR (from the API) and whether the
routes to other nodes are in place, so a pod wired without it could get an
address nobody routes to; and a pyroute2 process per call would cost
0.4-0.9 s. Runtimes retry code 11 (kuryr's Go client made the same choice),
DEL included: containerd and CRI-O retry sandbox teardown until it succeeds.
VERSION is answered here without the daemon, because runtimes (podman) call
it to validate configs before any daemon may be up.

"Not reachable" means a daemon that is down or starting (ENOENT, ECONNREFUSED,
EAGAIN, a timeout, a connection cut mid-answer): that clears by itself. A
permission error on the socket (EACCES, EPERM: the runtime execs the plugin as a
user that may not connect) does not, so it is **error 5** (I/O failure), which
is not the spec's "try again later" and is not retried as transient (STATUS:
still 50). cni/shim.c maps errors the same way.

After writing the answer the shim leaves with ``posix._exit`` (it holds nothing that
needs tearing down), which saves the interpreter's finalisation, ~1.2 ms per exec.

``podnet-cni install --form c`` builds the same protocol from cni/shim.c
instead (opt-in, needs a C compiler): ~1 ms per exec instead of 6-8 ms.

Management commands (``podnet-cni daemon ...``, ``podnet-cni install ...``) are
recognised by argv and handed to :mod:`podnet.cni.cli`; with no arguments this
is plugin mode.
"""

import sys

try:  # the builtin posix module: importing os would cost ~1 ms per exec
    from posix import environ as _environb
except ImportError:  # pragma: no cover - not Linux
    from os import environb as _environb

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
DEFAULT_SOCKET = "/run/podnet/cni.sock"
BAKED_SOCKET = ""  # set by `podnet-cni install --socket`
TIMEOUT = 300.0
IO_FAILURE = 5
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
PERMANENT_ERRNOS = (1, 13)  # EPERM, EACCES: retrying cannot help


def _json_str(s):
    out = ['"']
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c < " ":
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _error(code, msg):
    return ('{"cniVersion": "1.1.0", "code": %d, "msg": %s}\n' % (code, _json_str(msg))).encode()


def socket_from_config(stdin):
    """The string value of the top-level "socket" key, found without importing json."""
    i = stdin.find(b'"socket"')
    if i < 0:
        return ""
    j = i + 8
    n = len(stdin)
    while j < n and stdin[j] in b" \t\r\n":
        j += 1
    if j >= n or stdin[j] != 58:  # ':'
        return ""
    j += 1
    while j < n and stdin[j] in b" \t\r\n":
        j += 1
    if j >= n or stdin[j] != 34:  # '"'
        return ""
    k = stdin.find(b'"', j + 1)
    value = stdin[j + 1:k] if k > 0 else b""
    if b"\\" in value:  # escaped path: rare, decode properly
        import json

        try:
            return json.loads(stdin).get("socket", "")
        except Exception:
            return ""
    return value.decode("utf-8", "surrogateescape")


def encode_request(environ, stdin):
    parts = []
    for k, v in environ.items():
        if k.startswith("CNI_"):
            parts.append(("%s=%s\0" % (k, v)).encode("utf-8", "surrogateescape"))
    parts.append(b"\0")
    parts.append(stdin)
    return b"".join(parts)


def call_daemon(path, request, timeout=TIMEOUT):
    """(exit code, stdout bytes) from the daemon; raises OSError if it cannot be reached."""
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request)
        s.shutdown(_socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    data = b"".join(chunks)
    nl = data.find(b"\n")
    if nl < 1:
        raise ConnectionError("daemon closed the connection without an answer")
    return int(data[:nl]), data[nl + 1:]


def plugin_main(environ, stdin, stdout, baked_socket=""):
    """One CNI invocation; returns the exit status: 0, or 1 with the error JSON (and its code) on stdout,
    as the Go skel does (a CNI code such as 999 does not fit in an exit status)."""
    command = environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        versions = ", ".join('"%s"' % v for v in SUPPORTED_VERSIONS)
        stdout.write(('{"cniVersion": "1.1.0", "supportedVersions": [%s]}\n' % versions).encode())
        return 0
    data = stdin.read()
    path = socket_from_config(data) or baked_socket or environ.get("PODNET_CNI_SOCKET") or DEFAULT_SOCKET
    try:
        code, out = call_daemon(path, encode_request(environ, data))
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e)
        if command == "STATUS":
            stdout.write(_error(NOT_AVAILABLE, "podnet-cni daemon at %s is not available: %s" % (path, why)))
        elif getattr(e, "errno", None) in PERMANENT_ERRNOS:
            stdout.write(_error(IO_FAILURE, "podnet-cni daemon at %s refuses this plugin (%s): run the plugin "
                                            "as a user that may connect to the socket" % (path, why)))
        else:
            stdout.write(_error(TRY_AGAIN_LATER, "podnet-cni daemon at %s is not reachable (%s); try again later"
                                % (path, why)))
        return 1
    stdout.write(out)
    return 0 if code == 0 else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        try:
            from podnet.cni.cli import main as cli_main
        except ImportError:  # the installed copy runs isolated, without podnet on its path
            sys.stderr.write("podnet-cni: this is the installed CNI plugin; run management commands "
                             "(daemon, install) with the podnet-cni console script\n")
            return 2
        return cli_main(argv)
    environ = {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
               for k, v in _environb.items() if k.startswith((b"CNI_", b"PODNET_"))}
    code = plugin_main(environ, sys.stdin.buffer, sys.stdout.buffer, BAKED_SOCKET)
    sys.stdout.flush()
    return code


def exit_now(code):
    """Flush and leave without interpreter teardown (``posix._exit``): the plugin holds nothing
    that needs cleaning up (its socket is closed, stdout flushed), and a normal exit costs
    ~1.2 ms per exec on this machine, out of ~7 (bench/results/cni.md)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # the runtime closed our stdout: nothing more to tell it
        code = code or 1
    from posix import _exit

    _exit(code)


if __name__ == "__main__":
    _code = main()
    if len(sys.argv) > 1:  # management commands exit normally
        sys.exit(_code)
    exit_now(_code)
