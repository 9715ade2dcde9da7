"""Driving the Ansible roles in playbooks/: inventory from the cluster spec, ansible-runner with
per-host progress, the bundle check, and the applied-state record that lets a no-op re-run skip
Ansible entirely."""
