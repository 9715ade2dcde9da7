"""Action kubeprov_sh: ansible.builtin.shell without Ansible's module machinery on the host.

A shell task starts Python on the host, which unpacks and compiles Ansible's module code before
it runs one line of shell: about 0.3 s of the host's CPU per task, while the line itself takes
milliseconds. This action sends the script over the task's connection (with become, like any
pipelined module) to /bin/sh, and nothing else runs on the host.

Arguments: `script` (the shell text, run by /bin/sh as the shell module does), `stdin` (optional:
given to the script on its standard input, a newline appended, as the shell module's `stdin`).
The task's `environment` applies. The result is the shell module's: rc, stdout and stderr (their
last newline stripped), stdout_lines, stderr_lines, changed (tasks decide with changed_when),
failed when rc is not 0. In check mode it is skipped, as the shell module is.
"""

import secrets

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


def wrapped(script: str, stdin: str | None) -> str:
    """What /bin/sh -s reads: the script as one brace group (read whole before it runs, so no
    command in it can read the rest of the script as its input), its stdin a here-document with a
    delimiter the data cannot contain, or /dev/null."""
    if stdin is None:
        return "{\n%s\n} </dev/null\n" % script
    delimiter = "KUBEPROV_STDIN_" + secrets.token_hex(8)
    return "{\n%s\n} <<'%s'\n%s\n%s\n" % (script, delimiter, stdin, delimiter)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        script = self._task.args.get("script")
        if not isinstance(script, str) or not script.strip():
            raise AnsibleActionFail("kubeprov_sh: `script` (the shell text to run) is required")
        stdin = self._task.args.get("stdin")
        if self._task.check_mode:
            return {**result, "changed": False, "skipped": True, "msg": "not run in check mode (as the shell module)"}
        environment = self._compute_environment_string()
        ran = self._low_level_execute_command(f"{environment} /bin/sh -s".strip(), sudoable=True,
                                              in_data=wrapped(script, None if stdin is None else str(stdin)))
        stdout = (ran.get("stdout") or "").rstrip("\r\n")
        stderr = (ran.get("stderr") or "").rstrip("\r\n")
        rc = ran.get("rc", 0)
        result.update(rc=rc, stdout=stdout, stderr=stderr, stdout_lines=stdout.splitlines(),
                      stderr_lines=stderr.splitlines(), changed=True)
        if rc != 0:
            result.update(failed=True, msg="non-zero return code")
        return result
