"""Service accounts as a cluster provides them: the ``default`` ServiceAccount, the root CA, the token volume.

:class:`ServiceAccountController` is a post-commit hook on the :class:`~.apistore.Store` doing what
kube-controller-manager's serviceaccounts-controller and root-ca-cert-publisher do:

- every Namespace that is not terminating (nor being deleted) holds a ServiceAccount ``default`` (created when the
  Namespace appears, and again when someone deletes it);
- with a root CA (PEM), every such Namespace holds the ConfigMap ``kube-root-ca.crt`` whose
  ``ca.crt`` is that CA (created, recreated when deleted, put back when its data is changed).

:func:`admit_pod` is the ServiceAccount admission plugin on a Pod at create
(plugin/pkg/admission/serviceaccount/admission.go), pure data apart from the refusal:

- a mirror pod (annotation ``kubernetes.io/config.mirror``) passes untouched;
- ``spec.serviceAccountName`` defaults to ``default`` (and ``spec.serviceAccount``, the deprecated
  alias, mirrors it);
- a Pod whose ServiceAccount does not exist is refused with kube-apiserver's 403
  (``pods "<pod>" is forbidden: error looking up service account <ns>/<sa>: serviceaccount "<sa>" not
  found``); a workload controller's create fails the same way and is retried once the account exists;
- unless the Pod's ``automountServiceAccountToken`` is false (or, the Pod leaving it unset, its
  ServiceAccount's is false), or a volume named ``kube-api-access-*`` exists already: a projected
  volume ``kube-api-access-<5 random characters>`` (a serviceAccountToken of 3607 s at ``token``,
  ``ca.crt`` from the ConfigMap ``kube-root-ca.crt``, ``namespace`` from the downward API; mode 0644)
  and, in every container and init container without a mount at
  ``/var/run/secrets/kubernetes.io/serviceaccount``, a read-only mount of it there.

The volume is added only where the server publishes ``kube-root-ca.crt`` (it has a root CA), since the
ConfigMap source is not optional and a kubelet could not start the pod without it; a server without a
CA (plain http) leaves the volume to the lab kubelet, which then gives the same three files itself.
Pods of a ServiceAccount that does not exist are admitted (upstream refuses them).
"""

from __future__ import annotations

import secrets
from typing import Any, Mapping

from podnet.netlab.apiserver.apistore import Event, StatusError, Store

__all__ = ["ServiceAccountController", "admit_pod", "missing_service_account", "ROOT_CA_CONFIGMAP", "SA_MOUNT_PATH",
           "TOKEN_VOLUME_PREFIX", "MIRROR_POD_ANNOTATION"]

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME_PREFIX = "kube-api-access-"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


def _active(ns: Mapping[str, Any] | None) -> bool:
    return ns is not None and not ns["metadata"].get("deletionTimestamp") and \
        (ns.get("status") or {}).get("phase") != "Terminating"


class ServiceAccountController:
    """``root_ca``: the PEM published as ``kube-root-ca.crt`` (None: no ConfigMap is published)."""

    def __init__(self, store: Store, root_ca: str | None = None) -> None:
        self.store, self.root_ca = store, root_ca

    def resync(self) -> None:
        for ns in list(self.store.items("namespaces")):
            self._ensure(ns["metadata"]["name"])

    def hook(self, ev: Event) -> None:
        if ev.plural == "namespaces" and ev.type in ("ADDED", "MODIFIED"):
            self._ensure(ev.obj["metadata"]["name"])
        elif ev.plural == "namespaces" and ev.type == "DELETED":
            self._remove(ev.obj["metadata"]["name"])
        elif ev.plural == "serviceaccounts" and ev.type == "DELETED" and ev.obj["metadata"]["name"] == "default":
            self._ensure(ev.obj["metadata"]["namespace"])
        elif ev.plural == "configmaps" and ev.obj["metadata"]["name"] == ROOT_CA_CONFIGMAP and ev.type != "ADDED":
            self._ensure(ev.obj["metadata"]["namespace"])

    def _remove(self, ns: str) -> None:
        """What :meth:`_ensure` put back while the namespace's contents were being deleted."""
        for plural, name in (("serviceaccounts", "default"), ("configmaps", ROOT_CA_CONFIGMAP)):
            if self.store.get(plural, ns, name) is not None:
                self.store.delete(plural, ns, name)

    def _ensure(self, ns: str) -> None:
        if not _active(self.store.get("namespaces", "", ns)):
            return
        if self.store.get("serviceaccounts", ns, "default") is None:
            self.store.create("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                  "metadata": {"name": "default", "namespace": ns}})
        if self.root_ca is None:
            return
        want = {"ca.crt": self.root_ca}
        cm = self.store.get("configmaps", ns, ROOT_CA_CONFIGMAP)
        if cm is None:
            self.store.create("configmaps", {
                "apiVersion": "v1", "kind": "ConfigMap", "data": want,
                "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": ns,
                             "annotations": {"kubernetes.io/description": _CA_DESCRIPTION}}})
        elif cm.get("data") != want:
            self.store.update("configmaps", {**cm, "data": want})


_CA_DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
                   "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
                   "distributions of Kubernetes clusters.")


def token_volume(name: str) -> dict[str, Any]:
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


def missing_service_account(namespace: str, pod: str, account: str) -> StatusError:
    """The admission plugin's refusal of a Pod whose ServiceAccount does not exist (``admission.NewForbidden``
    around the lister's NotFound)."""
    return StatusError(403, "Forbidden", f'pods "{pod}" is forbidden: error looking up service account '
                                         f'{namespace}/{account}: serviceaccount "{account}" not found',
                       kind="pods", name=pod)


def admit_pod(pod: dict[str, Any], service_account: Mapping[str, Any] | None, *, add_volume: bool,
              suffix: str | None = None) -> None:
    """Mutate ``pod`` (a create's body after defaulting) as the admission plugin does, or raise its 403
    :class:`.StatusError` when ``service_account`` is None (module docstring). ``service_account``: the
    stored ServiceAccount the pod runs as, if any; ``suffix``: the volume name's random part (random when
    None)."""
    spec = pod.get("spec")
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    if not isinstance(spec, dict) or MIRROR_POD_ANNOTATION in (meta.get("annotations") or {}):
        return
    sa = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    spec["serviceAccountName"] = spec["serviceAccount"] = sa
    if service_account is None:  # named as admission.NewForbidden names it: the generateName while there is one
        shown = meta.get("generateName") or meta.get("name") or "Unknown"
        raise missing_service_account(str(meta.get("namespace", "")), str(shown), sa)
    if not add_volume:
        return
    automount = spec.get("automountServiceAccountToken")
    if automount is None and service_account is not None:
        automount = service_account.get("automountServiceAccountToken")
    if automount is False:
        return
    vols = spec.get("volumes")
    if vols is None:
        vols = spec["volumes"] = []
    if not isinstance(vols, list):
        return
    if any(isinstance(v, dict) and str(v.get("name", "")).startswith(TOKEN_VOLUME_PREFIX) for v in vols):
        return
    taken = {v.get("name") for v in vols if isinstance(v, dict)}
    name = TOKEN_VOLUME_PREFIX + (suffix or "".join(secrets.choice(_ALPHABET) for _ in range(5)))
    while name in taken:
        name = TOKEN_VOLUME_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(5))
    vols.append(token_volume(name))
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or ():
            if not isinstance(c, dict):
                continue
            mounts = c.setdefault("volumeMounts", [])
            if not isinstance(mounts, list):
                continue
            if any(isinstance(m, dict) and str(m.get("mountPath", "")).rstrip("/") == SA_MOUNT_PATH for m in mounts):
                continue
            mounts.append({"name": name, "readOnly": True, "mountPath": SA_MOUNT_PATH})
