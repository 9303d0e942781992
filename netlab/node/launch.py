"""A lab container's filesystem view, then its process: the last step before ``exec``.

The kubelet starts every container as ``[ip netns exec <pod-netns>] python -P -m
podnet.netlab.node.launch PLAN`` (PLAN: a JSON file the kubelet wrote). This module, standard
library only, then in this order:

1. enters a new mount namespace with one-way propagation (``unshare(CLONE_NEWNS)`` and
   ``mount --make-rslave /`` through libc, as ``ip netns exec`` does), so nothing it mounts is
   seen by the host or by another container, while mounts the host makes under a shared mount
   still reach the container: a volume of ``/var/run/netns`` sees network namespaces created
   after the container started (Kubernetes' ``mountPropagation: HostToContainer``);
2. mounts a tmpfs on the plan's ``scratch`` directory and builds the container's root there:
   an overlay whose lower layer is the host's ``/`` (so the host's programs and libraries are
   the "image"), under the plan's ``imageLayer`` when it names one (a directory of files the
   image has and the host lacks, copied onto the tmpfs first), and whose upper layer is on that
   tmpfs, so every write the container makes
   outside its volumes -- including the directories created for mount points such as
   ``/var/run/secrets/kubernetes.io/serviceaccount`` or ``/host/opt/cni/bin`` -- lands in the
   tmpfs and vanishes with the container, never on the host. Every other real file system
   mounted on the host gets the same treatment (an overlay of its own, in mount order), except
   network-namespace handles (nsfs), which a container sees only through a volume.
   ``/proc``, ``/sys`` (the pod's, as ``ip netns exec`` mounted it) and ``/dev`` are bound
   recursively: they belong to the kernel;
3. opens every volume's source on the host, ``chroot``s into the new root, and bind-mounts each
   source at its ``mountPath`` (a directory or a file, read-only when asked), creating the mount
   point inside the container's root; a target is resolved inside the container, so a symlink
   such as ``/var/run -> /run`` leads where it leads in the container;
4. ``chdir`` to ``workingDir`` (``/`` by default) and ``execvpe`` the container's argv with
   exactly the plan's environment (PATH from it; a plan without ``argv`` and ``env`` runs the
   arguments after PLAN with this process's environment, the form the kubelet execs CNI plugins
   in to give them the node's view of host paths), so the container keeps this process's pid. An
   argv that is this interpreter running a module (``<python> -P -m M ...``, the lab's echo
   server) runs M here with that environment instead of starting a second interpreter.

Failure before the exec prints one line to stderr (the container's log) and exits 128, which
the kubelet reports as the container's exit code, like a runtime's start failure.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys

__all__ = ["main", "parse_mountinfo", "overlay_targets"]

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 1, 32, 4096, 16384, 1 << 19
KERNEL_TREES = ("/proc", "/sys", "/dev")
"""Bound recursively into every container, as every runtime does."""
SKIP_TYPES = frozenset({"nsfs", "proc", "sysfs", "devtmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "bpf",
                        "tracefs", "debugfs", "securityfs", "pstore", "configfs", "fusectl", "hugetlbfs",
                        "binfmt_misc", "autofs", "efivarfs", "overlay"})
"""File systems never given an overlay (kernel interfaces, or an overlay already)."""

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source} on {target}")


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space) undone."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1:i + 4]) == 3 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """(mount point, file system type) of every line of /proc/self/mountinfo, in the file's order."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        out.append((_unescape(fields[4]), right.split()[0]))
    return out


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def overlay_targets(mounts: list[tuple[str, str]], scratch: str) -> list[str]:
    """The host mount points that get an overlay in the container, parents before children:
    every real file system except ``/`` itself (done first), the kernel trees, the scratch
    directory's own mounts and the types in :data:`SKIP_TYPES`. A path mounted twice counts once."""
    seen: dict[str, None] = {}
    for target, fstype in mounts:
        if target == "/" or fstype in SKIP_TYPES or any(_under(target, k) for k in KERNEL_TREES):
            continue
        if _under(target, scratch) or any(c in target for c in ",:\n"):
            continue
        seen.setdefault(target, None)
    return sorted(seen, key=lambda p: p.count("/"))


def _overlay(lower: str, target: str, scratch: str, n: int) -> None:
    up, wk = f"{scratch}/layers/u{n}", f"{scratch}/layers/w{n}"
    os.makedirs(up)
    os.makedirs(wk)
    os.makedirs(target, exist_ok=True)
    _mount("overlay", target, "overlay", 0, f"lowerdir={lower},upperdir={up},workdir={wk}")


def _make_target(target: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(target, exist_ok=True)
        return
    os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
    if not os.path.lexists(target):
        open(target, "a").close()


def build_root(scratch: str, image_layer: str = "") -> str:
    """Steps 1 and 2 of the module docstring; returns the new root's path."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_SLAVE)
    with open("/proc/self/mountinfo") as f:
        mounts = parse_mountinfo(f.read())
    _mount("tmpfs", scratch, "tmpfs", 0, "mode=0755")
    root = f"{scratch}/root"
    os.makedirs(root)
    lower = "/"
    if image_layer:
        # overlayfs refuses a lower layer inside another one (ELOOP): the image's files are
        # copied onto the scratch tmpfs, another file system, and laid over the host's /
        shutil.copytree(image_layer, f"{scratch}/image", symlinks=True)
        lower = f"{scratch}/image:/"
    _overlay(lower, root, scratch, 0)
    for n, target in enumerate(overlay_targets(mounts, scratch), 1):
        try:
            _overlay(target, root + target, scratch, n)
        except OSError:  # a file system overlayfs refuses as a lower layer: leave it out
            continue
    for tree in KERNEL_TREES:
        os.makedirs(root + tree, exist_ok=True)
        _mount(tree, root + tree, None, MS_BIND | MS_REC)
    return root


def enter(plan: dict) -> None:
    """Steps 1-3: the container's mount namespace, root and volumes, chroot'ed into."""
    root = build_root(plan["scratch"], plan.get("imageLayer") or "")
    opened = []
    for m in plan.get("mounts", ()):
        fd = os.open(m["source"], os.O_PATH | os.O_CLOEXEC)
        opened.append((fd, os.path.isdir(m["source"]), m))
    os.chroot(root)
    os.chdir("/")
    for fd, is_dir, m in opened:
        _make_target(m["target"], is_dir)
        _mount(f"/proc/self/fd/{fd}", m["target"], None, MS_BIND | MS_REC)
        if m.get("readOnly"):
            _mount(None, m["target"], None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        os.close(fd)


def _run_module(module: str, args: list[str], env: dict[str, str]) -> None:
    """``python -P -m module args`` in this very interpreter (saves a second interpreter start):
    the same environment, argv and ``__main__``; exits with the module's status."""
    import runpy

    os.environ.clear()
    os.environ.update(env)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -P -m podnet.netlab.node.launch PLAN.json [ARGV...]", file=sys.stderr)
        return 2
    try:
        with open(args[0]) as f:
            plan = json.load(f)
        enter(plan)
        os.chdir(plan.get("workingDir") or "/")
        argv_ = [str(a) for a in plan.get("argv") or args[1:]]
        env = {str(k): str(v) for k, v in (plan["env"] if "env" in plan else os.environ).items()}
        if not (argv_[:3] == [sys.executable, "-P", "-m"] and len(argv_) > 3):
            os.execvpe(argv_[0], argv_, env)
    except (OSError, KeyError, ValueError, IndexError, AttributeError) as e:
        print(f"podnet-lab: cannot start the container: {e}", file=sys.stderr, flush=True)
        return 128
    _run_module(argv_[3], argv_[4:], env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
