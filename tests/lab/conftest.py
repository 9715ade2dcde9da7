"""The session-wide lab fixture (`lab`): 3 real systemd hosts, up once per run, down at the end.

The fixture lives in provision/lab/testing.py so a conftest higher up can import it instead,
sharing the one lab with every integration test of the run.
"""

from provision.lab.testing import lab  # noqa: F401  (the fixture)
