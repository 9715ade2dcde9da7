"""Action kubeprov_artifacts: put binaries the controller verified onto a host, checked by sha256.

Arguments: `files`, a list of {src, dest, sha256} (the inventory's resolved artifacts), `mode`
(default 0755) and `missing`: the error when `files` is empty (none: nothing to place is fine). One `sha256sum` on the host finds the files that differ; only those are sent
(sftp/scp over the task's connection, no module run per file), checked again on the host,
and renamed into place, so a running binary is replaced atomically and a corrupt transfer never
lands at its destination. Three commands per host however many files: copy, stat and assert
per file were three module runs each.
"""

import os
import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


def placed_digests(stdout):
    """{path: sha256} from `sha256sum` output (files it could not read are simply absent)."""
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
            error = (result.get("stderr") or result.get("stdout") or "").strip().splitlines()
            raise AnsibleActionFail(f"{what}: {error[-1] if error else 'exit %d' % result['rc']}")
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
        have = placed_digests(self._run(
            "sha256sum -- " + " ".join(shlex.quote(item["dest"]) for item in files) + " 2>/dev/null; true", "sha256sum"))
        stale = [item for item in files if have.get(item["dest"]) != item["sha256"]]
        result.update(changed=bool(stale), placed=[item["dest"] for item in stale])
        if not stale or self._task.check_mode:
            return result
        remote_tmp = self._make_tmp_path()
        try:
            commands = []
            for number, item in enumerate(stale):
                sent = f"{remote_tmp}/{number}"
                self._connection.put_file(item["src"], sent)
                dest = shlex.quote(item["dest"])
                new = shlex.quote(item["dest"] + ".kubeprov-new")
                commands.append(
                    f"echo {shlex.quote(item['sha256'] + '  ' + sent)} | sha256sum --check --quiet --status - "
                    f"|| {{ echo {shlex.quote(item['dest'] + ': sha256 differs after the transfer')} >&2; exit 1; }}; "
                    f"mkdir -p \"$(dirname {dest})\" && cp {sent} {new} && chown 0:0 {new} && chmod {mode} {new} && mv -f {new} {dest}")
            self._run(" && ".join(f"{{ {c}; }}" for c in commands), "placing " + ", ".join(i["dest"] for i in stale))
        finally:
            self._remove_tmp_path(remote_tmp)
        return result
