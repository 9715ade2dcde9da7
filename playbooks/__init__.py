# A package so that setuptools maps playbooks/ into the wheel as provision.playbooks: an installed
# kubeprov finds its roles next to its code (provision/ansible/inventory.py: PLAYBOOKS).
