#!/usr/bin/python3
# Write several files in one module call. ansible.builtin.template and copy
# cost two module runs per file (a stat, then the copy: a Python start on
# the node each), and the roles write up to four files per node and
# product. The roles render with lookup('template') on the controller and
# pass the contents here.

DOCUMENTATION = r"""
module: files
short_description: Write files with their modes, each only when it differs
options:
  files:
    description: >-
      The files, each a dict with path, content and mode (octal string). A
      file whose content and mode match is not touched, so its mtime tells
      services when it last changed.
    required: true
    type: list
    elements: dict
"""

import os
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule


def differs(path, content, mode):
    """Reports whether path lacks content (bytes) or mode."""
    try:
        with open(path, "rb") as f:
            have = f.read()
        st = os.stat(path)
    except FileNotFoundError:
        return "content"
    if have != content:
        return "content"
    if stat.S_IMODE(st.st_mode) != mode:
        return "mode"
    return ""


def write(path, content, mode):
    """Replaces path atomically: a reader sees the old file or the new."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main():
    m = AnsibleModule(
        argument_spec=dict(files=dict(type="list", elements="dict", required=True)),
        supports_check_mode=True,
    )
    changed = []
    for i, f in enumerate(m.params["files"]):
        missing = [k for k in ("path", "content", "mode") if k not in f]
        if missing:
            m.fail_json(msg="files[%d]: missing %s" % (i, ", ".join(missing)))
        path = f["path"]
        try:
            mode = int(str(f["mode"]), 8)
        except ValueError:
            m.fail_json(msg="%s: mode %r: want an octal mode such as \"0600\"" % (path, f["mode"]))
        content = str(f["content"]).encode()
        what = differs(path, content, mode)
        if not what:
            continue
        changed.append(path)
        if m.check_mode:
            continue
        try:
            if what == "mode":
                os.chmod(path, mode)
            else:
                write(path, content, mode)
        except OSError as e:
            m.fail_json(msg="write %s: %s" % (path, e), changed_paths=changed)
    m.exit_json(changed=bool(changed), changed_paths=changed)


if __name__ == "__main__":
    main()
