"""Action kubeprov_images: import the bundle's image tarballs a host lacks into containerd, in the
background while the roles after it run.

Two calls, one per task (tasks/main.yml, then tasks/wait.yml at the end of the play):

`images` (the inventory's kubeprov_images: {file, sha256, refs}), `bundle_dir` on the controller,
`namespace` (default k8s.io, the one the kubelet's CRI uses): an image counts as present when
containerd has every one of its refs. The missing tarballs are sent by the files role's
kubeprov_artifacts action (over the task's connection, checked by sha256 on the host) into a job
directory under /var/lib/kubeprov/images/, and a job (a transient systemd unit) imports them one after another with
`ctr`, deleting each tarball once imported (containerd's content store keeps the image), then
writes `status`.
Returns `job`, the job directory ("" when nothing was missing).

`wait_for: <job>`: waits on the host until that job wrote its status, and fails with ctr's own
last line when an import failed.

Importing is seconds of CPU per image (decompression, layer unpacking); overlapping it with the
CNI, crictl and kubelet roles keeps it off prepare's critical path.
"""

import os
import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

STAGING = "/var/lib/kubeprov/images"
WAIT_SECONDS = 900


def unit_of(job):
    """The transient unit importing job directory `job` (…/job.XXXXXX)."""
    return "kubeprov-image-import-" + job.rsplit(".", 1)[-1]


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def _files_action(self, args):
        """The files role's kubeprov_artifacts action (this role's dependency) on this task's connection."""
        task = self._task.copy()
        task.args = args
        action = self._shared_loader_obj.action_loader.get(
            "kubeprov_artifacts", task=task, connection=self._connection, play_context=self._play_context,
            loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
        if action is None:
            raise AnsibleActionFail("the kubeprov_artifacts action (the files role) is not loaded")
        return action

    def _run(self, command, what):
        """A command on the host; its failure raised with the command's own last line."""
        return self._files_action({})._run(command, what)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if "wait_for" in self._task.args:
            return {**result, **self._wait(self._task.args["wait_for"])}
        return {**result, **self._start(task_vars)}

    def _start(self, task_vars):
        images = self._task.args.get("images") or []
        bundle = self._task.args.get("bundle_dir", "")
        ctr = "ctr --namespace " + shlex.quote(self._task.args.get("namespace", "k8s.io"))
        if not images:
            return {"changed": False, "job": "", "skipped": True, "skip_reason": "no images for this host"}
        present = set(self._run(f"{ctr} images list --quiet", "listing containerd's images").split())
        missing = [image for image in images if not set(image["refs"]) <= present]
        if not missing or self._task.check_mode:
            return {"changed": bool(missing), "job": "", "imported": [image["file"] for image in missing]}
        job = self._run(f"mkdir -p {STAGING} && mktemp -d {STAGING}/job.XXXXXX", "making the image job directory").strip()
        names = [(f"{number}.tar", image["file"]) for number, image in enumerate(missing)]
        # Sent, checked and placed by the files role's kubeprov_artifacts action (its dependency).
        self._send([{"src": os.path.join(bundle, image["file"]), "dest": f"{job}/{name}", "sha256": image["sha256"]}
                    for image, (name, _) in zip(missing, names)], task_vars)
        # The job's script, in its directory: one import after another, one job at a time per host
        # (flock: a run interrupted mid-import may have left one going), a status at the end.
        lines = ["set -u", f"cd {job}", f"exec 9>{STAGING}/.lock", "flock 9"]
        for name, file in names:
            lines.append(f"{ctr} images import {name} >>log 2>&1 || "
                         f"{{ echo {shlex.quote('failed ' + file)} >status.new; mv status.new status; exit 1; }}")
            lines.append(f"rm {name}")
        lines.append("echo ok >status.new && mv status.new status")
        self._run(f"printf '%s\\n' {' '.join(shlex.quote(line) for line in lines)} >{job}/import.sh", "writing the import job")
        # A transient systemd unit, not a process detached from this SSH session: the session's
        # end (its pty's hangup) must not be able to kill the job before it got going.
        self._run(f"systemd-run --quiet --collect --unit={unit_of(job)} sh {job}/import.sh", "starting the image import")
        return {"changed": True, "job": job, "imported": [image["file"] for image in missing]}

    def _send(self, files, task_vars):
        outcome = self._files_action({"files": files, "mode": "0644"}).run(task_vars=task_vars)
        if outcome.get("failed"):
            raise AnsibleActionFail(outcome.get("msg", "sending the images failed"))

    def _wait(self, job):
        if not job:
            return {"changed": False, "skipped": True, "skip_reason": "no import was started"}
        unit, job = unit_of(job), shlex.quote(job)
        # Until the job wrote its status; a unit that ended without one (killed, a host reboot)
        # is an error now, not after the timeout.
        status = self._run(
            f"timeout {WAIT_SECONDS} sh -c 'until [ -e {job}/status ]; do "
            f"systemctl is-active --quiet {unit} || [ -e {job}/status ] || exit 3; sleep 0.2; done'; "
            f"case $? in 0) ;; 3) echo 'the image import stopped without a result: journalctl -u {unit}' >&2; exit 1;; "
            f"*) echo 'the image import did not finish in {WAIT_SECONDS} s' >&2; exit 1;; esac; "
            f"cat {job}/status; if [ \"$(cat {job}/status)\" != ok ]; then tail -n 1 {job}/log; fi",
            "waiting for the image import").splitlines()
        if not status or status[0] != "ok":
            raise AnsibleActionFail(f"image import: {status[0] if status else 'no status'}: {status[-1] if len(status) > 1 else ''}")
        self._run(f"rm -rf {job}", "removing the image job directory")
        return {"changed": True}
