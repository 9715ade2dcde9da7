"""Action kubeprov_files: read each host's rendered files on the controller and hand them to the
kubeprov_files module in one call.

Arguments: `files`, a list of {path, mode} (the inventory's kubeprov_files[<role>]); the bytes
come from <kubeprov_render_dir>/<inventory_hostname>/<path>, where `kubeprov prepare` (or
`kubeprov render`) wrote them.
"""

import base64
import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        root = os.path.join(task_vars["kubeprov_render_dir"], task_vars["inventory_hostname"])
        paths, contents = [], []
        for item in self._task.args.get("files") or []:
            source = os.path.join(root, item["path"].lstrip("/"))
            try:
                with open(source, "rb") as handle:
                    content = base64.b64encode(handle.read()).decode()
            except OSError as exc:
                raise AnsibleActionFail(f"rendered file {source} is missing ({exc.strerror}); run `kubeprov prepare` or `kubeprov render`")
            paths.append({"path": item["path"], "mode": str(item["mode"])})
            contents.append(content)
        if not paths:
            return {**result, "changed": False, "skipped": True, "skip_reason": "no rendered files for this role"}
        result.update(self._execute_module(module_name="kubeprov_files", module_args={"files": paths, "contents": contents}, task_vars=task_vars))
        return result
