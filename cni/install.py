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
is too slow (about 1 ms instead of 6-8).
"""

from __future__ import annotations

import argparse
import json
import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

from podnet.cni import shim

PLUGIN_NAME = "podnet-cni"
C_SOURCE = Path(__file__).with_name("shim.c")


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
    p.add_argument("--form", choices=("bytecode", "source", "c"), default="bytecode",
                   help="c: compile cni/shim.c with the system C compiler (opt-in; fastest exec)")


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


def conflist(network: str, socket_path: str, data_dir: str) -> dict:
    # capabilities: libcni passes runtimeConfig.ips / .mac only to plugins that declare them
    plugin = {"type": PLUGIN_NAME, "socket": socket_path, "capabilities": {"ips": True, "mac": True}}
    if data_dir:
        plugin["dataDir"] = data_dir
    return {"cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.0.0", "1.1.0"], "name": network,
            "plugins": [plugin]}


def _atomic_write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def compile_c(binary: Path, socket_path: str) -> None:
    """Build the compiled shim next to ``binary`` and rename it into place."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("--form c needs a C compiler (cc/gcc)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f".{binary.name}.tmp{os.getpid()}")
    baked = json.dumps(socket_path)  # a valid C string literal for any path
    p = subprocess.run([cc, "-O2", "-o", str(tmp), f"-DPODNET_BAKED_SOCKET={baked}", str(C_SOURCE)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"compiling {C_SOURCE}: {p.stderr.strip()}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, binary)


def install(bin_dir: str, conf_dir: str, socket_path: str, data_dir: str = "", network: str = "podnet",
            conflist_name: str = "10-podnet.conflist", python: str = "auto",
            form: str = "bytecode") -> tuple[Path, Path]:
    binary = Path(bin_dir) / PLUGIN_NAME
    if form == "c":
        compile_c(binary, socket_path)
    else:
        _atomic_write(binary, binary_text(pick_python(python), socket_path, form), 0o755)
    conf = Path(conf_dir) / conflist_name
    _atomic_write(conf, json.dumps(conflist(network, socket_path, data_dir), indent=2) + "\n", 0o644)
    return binary, conf


def run(args: argparse.Namespace) -> int:
    b, c = install(args.bin_dir, args.conf_dir, args.socket, args.data_dir, args.network_name, args.conflist,
                   args.python, args.form)
    print(f"installed {b} and {c}")
    return 0
