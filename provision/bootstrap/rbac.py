"""The RBAC kubeadm sets up so bootstrap-token holders can join and nodes renew their certificates
(cmd/kubeadm/app/phases/bootstraptoken/node and the kubeconfig phase), as API objects.

    kubeadm:get-nodes                           token holders may `get` nodes (join checks for a
                                                node of its own name)
    kubeadm:kubelet-bootstrap                   token holders may post CSRs (system:node-bootstrapper)
    kubeadm:node-autoapprove-bootstrap          the csrapprover approves their node-client CSRs
    kubeadm:node-autoapprove-certificate-rotation  … and nodes' renewals of their own client certs
    kubeadm:cluster-admins (≥ 1.29)             admin.conf's group gets cluster-admin

The cluster-info reader Role/RoleBinding for system:anonymous comes with cluster-info itself
(provision/render/cluster_objects.py), and so do the kubeadm-config/kubelet-config readers.
"""

from __future__ import annotations

from provision.config.models import Cluster
from provision.pki.certlist import CLUSTER_ADMINS
from provision.render.addons import k8s

GET_NODES = "kubeadm:get-nodes"
KUBELET_BOOTSTRAP = "kubeadm:kubelet-bootstrap"
AUTOAPPROVE_BOOTSTRAP = "kubeadm:node-autoapprove-bootstrap"
AUTOAPPROVE_ROTATION = "kubeadm:node-autoapprove-certificate-rotation"
CLUSTER_ADMINS_BINDING = "kubeadm:cluster-admins"

# ClusterRoles the API server creates itself at startup (its bootstrap policy).
NODE_BOOTSTRAPPER = "system:node-bootstrapper"
NODE_CLIENT_APPROVAL = "system:certificates.k8s.io:certificatesigningrequests:nodeclient"
SELF_NODE_CLIENT_APPROVAL = "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"
CLUSTER_ADMIN = "cluster-admin"

FIRST_CLUSTER_ADMINS_MINOR = 29


def rbac_objects(cluster: Cluster) -> list[dict]:
    tokens = [k8s.group(k8s.BOOTSTRAP_TOKEN_GROUP)]
    objects = [
        {
            "apiVersion": f"{k8s.RBAC_API}/v1",
            "kind": "ClusterRole",
            "metadata": k8s.metadata(GET_NODES),
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        },
        k8s.cluster_role_binding(GET_NODES, GET_NODES, tokens),
        k8s.cluster_role_binding(KUBELET_BOOTSTRAP, NODE_BOOTSTRAPPER, tokens),
        k8s.cluster_role_binding(AUTOAPPROVE_BOOTSTRAP, NODE_CLIENT_APPROVAL, tokens),
        k8s.cluster_role_binding(AUTOAPPROVE_ROTATION, SELF_NODE_CLIENT_APPROVAL, [k8s.group(k8s.NODES_GROUP)]),
    ]
    if cluster.minor >= FIRST_CLUSTER_ADMINS_MINOR:
        objects.append(k8s.cluster_role_binding(CLUSTER_ADMINS_BINDING, CLUSTER_ADMIN, [k8s.group(CLUSTER_ADMINS)]))
    return objects
