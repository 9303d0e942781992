"""The podnet image's size, what takes the space, and the published sizes of the images it replaces.

    .venv/bin/python -P bench/image_size.py [--image localhost/podnet:0.1.0] [--no-compressed]

Build the image first (`bash dev.sh image`). Printed:

- the image's size as podman reports it (uncompressed, as `docker images` / `crictl
  images` show sizes), and gzip-compressed (`podman save` piped through gzip -6: about
  what a registry stores and a node downloads);
- the biggest parts inside it (du of a few directories, in a container run with
  --network none);
- the static plugin shim's size (what is copied to every host);
- for comparison, published sizes of kube-proxy and CoreDNS images (uncompressed,
  from the sources named in REFERENCE). podnet's one image replaces both, plus a CNI.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zlib

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
RUN = ["run", "--rm", "--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]

REFERENCE = [
    ("k8s.gcr.io/kube-proxy v1.23.0 (debian-iptables base)", 112e6,
     "kubernetes/kubernetes#109406: `docker images` shows 112MB"),
    ("registry.k8s.io/coredns/coredns v1.11.1, linux/amd64", 59.82e6,
     "xuanyuan.cloud mirror listing of registry.k8s.io/coredns/coredns: 59.82MB"),
]
"""Uncompressed sizes. Since Kubernetes 1.25 kube-proxy is built on distroless-iptables, which
kubernetes/release#2502 says cut the image by "about 50% (30Mb)"; no absolute figure is given
there, so none is printed for it."""
PARTS = ["/opt/podnet", "/usr/lib/python3.11", "/usr/lib/x86_64-linux-gnu", "/usr/share", "/usr/bin", "/usr/sbin",
         "/var/lib", "/usr/lib/podnet"]


def podman(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*PODMAN, *args], capture_output=capture, text=True, check=True)


def compressed_size(image: str) -> int:
    """Bytes of `podman save` (docker-archive) after gzip -6, streamed."""
    p = subprocess.Popen([*PODMAN, "save", "--format", "docker-archive", image], stdout=subprocess.PIPE)
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    total = 0
    assert p.stdout is not None
    while chunk := p.stdout.read(1 << 20):
        total += len(z.compress(chunk))
    total += len(z.flush())
    if p.wait() != 0:
        raise RuntimeError("podman save failed")
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default="localhost/podnet:0.1.0")
    ap.add_argument("--no-compressed", action="store_true", help="skip the gzip measurement (~10 s)")
    a = ap.parse_args()
    size = int(podman("image", "inspect", "--format", "{{.Size}}", a.image).stdout)
    print(f"# {a.image}")
    print(f"uncompressed (podman image inspect .Size): {size / 1e6:8.1f} MB")
    if not a.no_compressed:
        print(f"gzip -6 of podman save:                    {compressed_size(a.image) / 1e6:8.1f} MB")
    du = podman(*RUN, a.image, "du", "-sk", *PARTS).stdout
    print("\n# inside the image (du -sk)")
    for line in du.splitlines():
        kb, path = line.split(maxsplit=1)
        print(f"{path:32} {int(kb) / 1024:8.1f} MiB")
    shim = podman(*RUN, a.image, "stat", "-c", "%s", "/usr/lib/podnet/podnet-cni-static").stdout.strip()
    print(f"\nstatic plugin shim (copied to every host): {int(shim) / 1e3:.0f} kB")
    print("\n# published sizes of the images podnet replaces (uncompressed)")
    for name, nbytes, source in REFERENCE:
        print(f"{name:64} {nbytes / 1e6:7.1f} MB   ({source})")
    both = REFERENCE[0][1] + REFERENCE[1][1]
    print(f"{'kube-proxy v1.23.0 + CoreDNS v1.11.1 together':64} {both / 1e6:7.1f} MB")
    print(f"podnet / (kube-proxy + CoreDNS): {size / both:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
