"""``podnet-cni install``: put the plugin binary and a conflist where runtimes look.

Writes ``<bin-dir>/podnet-cni`` (the stdlib-only shim, with a ``#!<python> -IS``
shebang and the daemon socket baked in) and ``<conf-dir>/<conflist>``
(default ``10-podnet.conflist``, which sorts before most others, since
containerd uses only the first file). Both are written to a temporary file
and renamed into place, so a runtime never execs or reads a half-written file
(libcni retries "text file busy", but not a truncated script).

Binary forms (``--form``): ``source`` is the shim's source text; ``bytecode``
(the default, measured faster: bench/results/cni.md) embeds the shim compiled
to a code object at install time, so no exec ever parses Python source; it
falls back to source when the chosen interpreter's version differs from the
installer's (marshal data is version-specific). The interpreter defaults to
/usr/bin/python3 when present: the shim needs only the standard library, and
Debian's statically linked python3 starts ~1.5 ms faster than a venv
interpreter linked against libpython. ``c`` (opt-in) compiles cni/shim.c, the
same protocol in ~150 lines of C, for runtimes where a Python start per exec
is too slow (about 1 ms instead of 6-8). ``static`` copies a prebuilt,
statically linked build of cni/shim.c (``--static-shim``, default
:data:`STATIC_SHIM`, where the podnet image puts it): it needs nothing on the
host, no interpreter and no libc, so it runs on Flatcar, Bottlerocket or Talos
and in an empty root filesystem; the daemon's socket comes from the conflist.
This is what the real-cluster install (deploy/podnet.yaml's init container)
uses. Every binary is checked before it is renamed into place: it must answer
VERSION with the versions podnet speaks.

Exit status of ``podnet-cni install``: 0 installed; 1 a configuration that
cannot work (portmap, versions, a binary that does not answer VERSION); 3 the
file system refused (a read-only or missing directory), with one line naming
the path. Nothing is left half-written in any case.

hostPort (``--portmap``): Kubernetes hostPorts reach a pod only through a
chained plugin that declares the ``portMappings`` capability; kubelet,
containerd, CRI-O and podman pass ``runtimeConfig.portMappings`` to it and the
reference ``portmap`` plugin does the DNAT (``CNI-HOSTPORT-*`` chains). The
default, ``auto``, chains portmap after podnet when a ``portmap`` executable is
in the runtime's plugin directories (``--plugin-dirs``, default ``--bin-dir``):
kubelet accepts a pod with a hostPort whatever the CNI, so without portmap the
port silently does nothing (flannel's and Calico's default conflists chain
portmap for that reason), while chaining a portmap that is absent would fail
every ADD; so the file system decides. ``on`` insists (an error when portmap
is missing), ``off`` never chains it. The conflist's versions are capped to
the ones portmap reports for VERSION (Debian's containernetworking-plugins
1.1.1 speaks up to 1.0.0), since every plugin of a list is called at the
list's version.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

from podnet.cni import shim

PLUGIN_NAME = "podnet-cni"
PORTMAP = "portmap"
CONF_VERSION = "1.0.0"  # the conflist's cniVersion unless --cni-version says otherwise
CONF_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")  # cniVersions (libcni >= 1.2 picks the highest it speaks)
C_SOURCE = Path(__file__).with_name("shim.c")
STATIC_SHIM = "/usr/lib/podnet/podnet-cni-static"
"""Where the podnet image keeps the statically linked shim (deploy/Containerfile)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bin-dir", default="/opt/cni/bin")
    p.add_argument("--conf-dir", default="/etc/cni/net.d")
    p.add_argument("--socket", default=shim.DEFAULT_SOCKET, help="the node daemon's socket")
    p.add_argument("--data-dir", default="", help="recorded in the conflist for operators")
    p.add_argument("--network-name", default="podnet")
    p.add_argument("--conflist", default="10-podnet.conflist")
    p.add_argument("--python", default="auto",
                   help="interpreter for the shim's shebang; auto: /usr/bin/python3 if present (a statically linked "
                        "interpreter starts faster; the shim needs only the standard library), else this one")
    p.add_argument("--form", choices=("bytecode", "source", "c", "static"), default="bytecode",
                   help="c: compile cni/shim.c with the system C compiler (opt-in; fastest exec); "
                        "static: copy the prebuilt statically linked shim (--static-shim), which needs nothing "
                        "on the host")
    p.add_argument("--static-shim", default=STATIC_SHIM, help="the statically linked shim --form static copies")
    p.add_argument("--portmap", choices=("auto", "on", "off"), default="auto",
                   help="chain the reference portmap plugin after podnet for hostPorts (runtimeConfig.portMappings); "
                        "auto: when a portmap executable is in --plugin-dirs")
    p.add_argument("--plugin-dirs", default="",
                   help="colon-separated directories the runtime searches for plugins (where portmap is looked for); "
                        "default: --bin-dir")
    p.add_argument("--cni-version", default="",
                   help=f"the conflist's cniVersion (default {CONF_VERSION} with cniVersions {list(CONF_VERSIONS)}); "
                        "set for runtimes that speak only older versions")


def shim_source(socket_path: str) -> str:
    src = Path(shim.__file__).read_text()
    return src.replace('BAKED_SOCKET = ""', f"BAKED_SOCKET = {socket_path!r}", 1)


def pick_python(python: str) -> str:
    if python != "auto":
        return python
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def same_bytecode(python: str) -> bool:
    """True if ``python`` reads this interpreter's marshal format (same major.minor)."""
    try:
        out = subprocess.run([python, "-IS", "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return False
    return out == str(tuple(sys.version_info[:2]))


def binary_text(python: str, socket_path: str, form: str) -> str:
    src = shim_source(socket_path)
    head = f"#!{python} -IS\n"
    if form == "source" or not same_bytecode(python):
        return head + src
    code = marshal.dumps(compile(src, "podnet-cni", "exec"))
    return head + f"import marshal\nexec(marshal.loads({code!r}))\n"


def find_plugin(name: str, dirs: list[str]) -> Path | None:
    """The first executable ``name`` in ``dirs``, searched in order as libcni's FindInPath does."""
    for d in dirs:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def plugin_versions(binary: Path) -> tuple[str, ...]:
    """The spec versions a plugin reports for VERSION (which configures nothing and touches no network)."""
    try:
        p = subprocess.run([str(binary)], input=b"", capture_output=True, timeout=30,
                           env={"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin")})
        versions = json.loads(p.stdout)["supportedVersions"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"{binary}: VERSION failed: {e}") from None
    if p.returncode != 0 or not isinstance(versions, list):
        raise RuntimeError(f"{binary}: VERSION failed: {p.stdout!r} {p.stderr!r}")
    return tuple(str(v) for v in versions)


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def conflist(network: str, socket_path: str, data_dir: str, portmap_versions: tuple[str, ...] | None = None,
             cni_version: str = "") -> dict:
    """The conflist: podnet, then (when ``portmap_versions`` is given) portmap for hostPorts.

    ``portmap_versions`` is what the portmap binary supports; the list's versions are
    those both plugins speak. ``cni_version`` pins one version (no ``cniVersions``).
    """
    from podnet.cni.version import SUPPORTED

    # capabilities: libcni passes runtimeConfig.ips / .mac only to plugins that declare them
    plugin = {"type": PLUGIN_NAME, "socket": socket_path, "capabilities": {"ips": True, "mac": True}}
    if data_dir:
        plugin["dataDir"] = data_dir
    plugins = [plugin]
    ours = set(SUPPORTED)
    if portmap_versions is not None:
        ours &= set(portmap_versions)
        # snat: hairpin and localhost hostPort traffic is masqueraded so replies come back through the node;
        # portmap marks with bit 13 (0x2000), clear of kube-proxy's (and podnet-proxy's) 0x4000/0x8000
        plugins.append({"type": PORTMAP, "capabilities": {"portMappings": True}, "snat": True})
    if cni_version:
        if cni_version not in ours:
            raise ValueError(f"cniVersion {cni_version} is not spoken by every plugin in the list "
                             f"(common: {sorted(ours, key=_vkey)})")
        return {"cniVersion": cni_version, "name": network, "plugins": plugins}
    versions = [v for v in CONF_VERSIONS if v in ours]
    if not versions:  # an old portmap (0.3.x only): pin the newest version both speak
        if not ours:
            raise ValueError(f"portmap supports {list(portmap_versions or ())}, podnet {list(SUPPORTED)}: "
                             "no version in common")
        return {"cniVersion": max(ours, key=_vkey), "name": network, "plugins": plugins}
    default = CONF_VERSION if CONF_VERSION in versions else versions[-1]
    return {"cniVersion": default, "cniVersions": versions, "name": network, "plugins": plugins}


def portmap_for(mode: str, dirs: list[str]) -> tuple[str, ...] | None:
    """portmap's supported versions if it is to be chained, else None (``mode``: auto, on, off)."""
    if mode == "off":
        return None
    found = find_plugin(PORTMAP, dirs)
    if found is None:
        if mode == "on":
            raise RuntimeError(f"--portmap on: no {PORTMAP} executable in {':'.join(dirs)}")
        return None
    return plugin_versions(found)


def _tmp_name(path: Path) -> Path:
    """A temporary name in ``path``'s directory (a rename within one file system is atomic)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _atomic_write(path: Path, text: str | bytes, mode: int, verify=None) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, chmod, ``verify(tmp)``, rename.

    A reader sees the old file or the whole new one, never a part; on any
    failure the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a crash once the directory is synced
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_binary(binary: Path) -> None:
    """RuntimeError unless ``binary`` answers VERSION with every version podnet speaks."""
    from podnet.cni.version import SUPPORTED

    got = plugin_versions(binary)
    if not set(SUPPORTED) <= set(got):
        raise RuntimeError(f"{binary}: VERSION answered {list(got)}, expected {list(SUPPORTED)}")


def copy_static(src: str, binary: Path) -> None:
    """Install the prebuilt static shim ``src`` as ``binary`` (checked, then renamed into place)."""
    try:
        data = Path(src).read_bytes()
    except OSError as e:
        raise RuntimeError(f"--static-shim {src}: {e.strerror}") from None
    if not data.startswith(b"\x7fELF"):
        raise RuntimeError(f"--static-shim {src}: not an ELF executable")
    _atomic_write(binary, data, 0o755, verify=check_binary)


def build_shim(out: Path, socket_path: str = "", static: bool = False) -> None:
    """Compile cni/shim.c to ``out`` (``static``: linked with -static; runs with no libc on the host)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("building the C shim needs a C compiler (cc/gcc)")
    baked = json.dumps(socket_path)  # a valid C string literal for any path
    p = subprocess.run([cc, "-O2", *(["-static"] if static else []), "-o", str(out),
                        f"-DPODNET_BAKED_SOCKET={baked}", str(C_SOURCE)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"compiling {C_SOURCE}: {p.stderr.strip()}")


def compile_c(binary: Path, socket_path: str) -> None:
    """Build the compiled shim next to ``binary``, check it, and rename it into place."""
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(binary)
    try:
        build_shim(tmp, socket_path)
        os.chmod(tmp, 0o755)
        check_binary(tmp)
        os.replace(tmp, binary)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def install(bin_dir: str, conf_dir: str, socket_path: str, data_dir: str = "", network: str = "podnet",
            conflist_name: str = "10-podnet.conflist", python: str = "auto",
            form: str = "bytecode", portmap: str = "auto", plugin_dirs: list[str] | None = None,
            cni_version: str = "", static_shim: str = STATIC_SHIM) -> tuple[Path, Path]:
    """Write the binary and the conflist; ``portmap``: auto, on or off (see the module docstring)."""
    pm = portmap_for(portmap, plugin_dirs or [bin_dir])
    doc = conflist(network, socket_path, data_dir, pm, cni_version)  # refuse a bad conflist before writing anything
    binary = Path(bin_dir) / PLUGIN_NAME
    if form == "c":
        compile_c(binary, socket_path)
    elif form == "static":
        copy_static(static_shim, binary)
    else:
        _atomic_write(binary, binary_text(pick_python(python), socket_path, form), 0o755)
    conf = Path(conf_dir) / conflist_name
    _atomic_write(conf, json.dumps(doc, indent=2) + "\n", 0o644)
    return binary, conf


@dataclass(frozen=True)
class InstallOptions:
    """What ``podnet-cni install`` writes, from its flags (:func:`install_options_from`)."""

    bin_dir: str = "/opt/cni/bin"
    conf_dir: str = "/etc/cni/net.d"
    socket: str = shim.DEFAULT_SOCKET
    data_dir: str = ""
    network_name: str = "podnet"
    conflist: str = "10-podnet.conflist"
    python: str = "auto"
    form: str = "bytecode"
    portmap: str = "auto"
    plugin_dirs: tuple[str, ...] = ()
    cni_version: str = ""
    static_shim: str = STATIC_SHIM


def install_options_from(args: argparse.Namespace) -> InstallOptions:
    """The frozen options of the parsed flags; ``--plugin-dirs`` empty means ``--bin-dir``."""
    dirs = tuple(d for d in args.plugin_dirs.split(":") if d) or (args.bin_dir,)
    return InstallOptions(bin_dir=args.bin_dir, conf_dir=args.conf_dir, socket=args.socket, data_dir=args.data_dir,
                          network_name=args.network_name, conflist=args.conflist, python=args.python,
                          form=args.form, portmap=args.portmap, plugin_dirs=dirs, cni_version=args.cni_version,
                          static_shim=args.static_shim)


def run(o: InstallOptions) -> int:
    try:
        b, c = install(o.bin_dir, o.conf_dir, o.socket, o.data_dir, o.network_name, o.conflist,
                       o.python, o.form, o.portmap, list(o.plugin_dirs), o.cni_version, o.static_shim)
    except (RuntimeError, ValueError) as e:
        print(f"podnet-cni install: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"podnet-cni install: cannot write {where}{e.strerror or e}", file=sys.stderr)
        return 3
    chained = [p["type"] for p in json.loads(c.read_text())["plugins"]]
    print(f"installed {b} and {c} (plugins: {', '.join(chained)})")
    return 0
