"""Day 2: what an operator does with a cluster after `up` — reset hosts, remove nodes, back up
and restore etcd. Each command plans first (refusing what would break the cluster, naming why),
then acts per host through the SSH transport, like `up`."""
