"""podnet.kube: the Kubernetes API layer shared by the proxy, DNS and CNI daemon."""
