"""The addons kubeadm installs through the API after the control plane is up: kube-proxy, CoreDNS."""
