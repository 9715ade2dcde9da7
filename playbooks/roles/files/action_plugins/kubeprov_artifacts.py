"""Action kubeprov_artifacts: put files the controller verified onto a host, checked by sha256.

Arguments: `files`, a list of {src, dest, sha256} (the inventory's resolved artifacts), `mode`
(default 0755) and `missing`: the error when `files` is empty (none: nothing to place is fine).
One digest run on the host finds the files that differ; only those are sent (sftp/scp over the
task's connection, no module run per file), checked again on the host, and renamed into place, so
a running binary is replaced atomically and a corrupt transfer never lands at its destination.
Three commands per host however many files. The images action sends its tarballs through this one.
"""

import os
import re
import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

CONNECTION_CLOSED = re.compile(r"^(Shared c|C)onnection to \S+ closed\.$")

# sha256 on the host by Python's hashlib, which uses OpenSSL: about ten times faster than
# coreutils' sha256sum, which uses no SHA CPU extension (0.05 s against 0.5 s of CPU for a
# kubelet), for every binary and image on every host. Python is on every host: Ansible's own
# modules need it. Without --check it prints `sha256sum` lines for the files it can read; with
# --check it takes (digest, file, name) triples and names the first file that differs.
HOST_SHA256 = r"""
import hashlib, sys
def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
if sys.argv[1:2] == ["--check"]:
    args = sys.argv[2:]
    for want, path, name in zip(args[0::3], args[1::3], args[2::3]):
        if digest(path) != want:
            sys.exit(name + ": sha256 differs after the transfer")
else:
    for path in sys.argv[1:]:
        try:
            print(digest(path) + "  " + path)
        except OSError:
            pass
"""


def host_sha256(*args):
    """The host command running HOST_SHA256 with these arguments."""
    return "python3 -c " + shlex.quote(HOST_SHA256) + " " + " ".join(shlex.quote(a) for a in args)


def last_error_line(result):
    """The command's own last line: over a tty (become) its stderr arrives in stdout, and ssh's
    "Connection to … closed." in stderr."""
    lines = [line.strip() for line in (result.get("stdout", "") + "\n" + result.get("stderr", "")).splitlines()]
    lines = [line for line in lines if line and not CONNECTION_CLOSED.match(line)]
    return lines[-1] if lines else "exit %d" % result["rc"]


def placed_digests(stdout):
    """{path: sha256} from `sha256sum`-format output (files it could not read are simply absent)."""
    digests = {}
    for line in stdout.splitlines():
        digest, _, path = line.partition("  ")
        if path:
            digests[path] = digest
    return digests


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def _run(self, command, what):
        result = self._low_level_execute_command(command, sudoable=True)
        if result["rc"] != 0:
            raise AnsibleActionFail(f"{what}: {last_error_line(result)}")
        return result.get("stdout", "")

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        files = self._task.args.get("files") or []
        mode = str(self._task.args.get("mode", "0755"))
        if not files and (self._task.args.get("missing") or "").strip():
            raise AnsibleActionFail(self._task.args["missing"].strip())
        if not files:
            return {**result, "changed": False, "skipped": True, "skip_reason": "no files from this source"}
        for item in files:
            if not os.path.isfile(item["src"]):
                raise AnsibleActionFail(f"{item['src']} is missing on the controller")
        have = placed_digests(self._run(host_sha256(*(item["dest"] for item in files)), "reading the placed files' sha256"))
        stale = [item for item in files if have.get(item["dest"]) != item["sha256"]]
        result.update(changed=bool(stale), placed=[item["dest"] for item in stale])
        if not stale or self._task.check_mode:
            return result
        remote_tmp = self._make_tmp_path()
        try:
            sent = [f"{remote_tmp}/{number}" for number in range(len(stale))]
            for item, path in zip(stale, sent):
                self._connection.put_file(item["src"], path)
            check = host_sha256("--check", *(x for item, path in zip(stale, sent) for x in (item["sha256"], path, item["dest"])))
            # Moved, not copied, next to the destination first: the rename into place is atomic.
            places = [
                f"mkdir -p \"$(dirname {dest})\" && mv -f {path} {new} && chown 0:0 {new} && chmod {mode} {new} && mv -f {new} {dest}"
                for path, dest, new in ((path, shlex.quote(item["dest"]), shlex.quote(item["dest"] + ".kubeprov-new"))
                                        for item, path in zip(stale, sent))
            ]
            self._run(" && ".join([check, *places]), "placing " + ", ".join(item["dest"] for item in stale))
        finally:
            self._remove_tmp_path(remote_tmp)
        return result
