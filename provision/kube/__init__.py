"""Talking to the Kubernetes API during `up`: kubectl on a control plane, through the transport."""

from provision.kube.kubectl import Kubectl

__all__ = ["Kubectl"]
