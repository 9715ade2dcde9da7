#!/usr/bin/python3
"""Ansible module: make many small files hold exactly the given bytes and mode, in one call.

The kubeprov_files action (this role's action_plugins/) reads the rendered files on the
controller and sends them here; each file whose content, mode or owner differ is written
atomically (temp file in the same directory, then rename). One module run per role instead of
two per file is what keeps a run with nothing to do short.
"""

import base64
import hashlib
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule


def _current(path):
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return hashlib.sha256(data).hexdigest(), st.st_mode & 0o7777, st.st_uid, st.st_gid


def main():
    module = AnsibleModule(argument_spec={
        "files": {"type": "list", "elements": "dict", "required": True},  # path, mode
        # The bytes, base64, in the same order; no_log: keys must never reach a log or an event.
        "contents": {"type": "list", "elements": "str", "required": True, "no_log": True},
    }, supports_check_mode=True)
    changed = []
    if len(module.params["files"]) != len(module.params["contents"]):
        module.fail_json(msg="files and contents differ in length")
    for item, content in zip(module.params["files"], module.params["contents"]):
        path, mode = item["path"], int(str(item["mode"]), 8)
        data = base64.b64decode(content)
        current = _current(path)
        if current == (hashlib.sha256(data).hexdigest(), mode, 0, 0):
            continue
        changed.append(path)
        if module.check_mode:
            continue
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.kubeprov-")
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchown(handle.fileno(), 0, 0)
                os.fchmod(handle.fileno(), mode)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    module.exit_json(changed=bool(changed), files=changed)


if __name__ == "__main__":
    main()
