#!/usr/bin/python3
# Make directories, write files and remove paths in one module call. ansible.builtin.file
# takes one path, and template and copy cost two module runs per file (a
# stat, then the copy: a Python start on the node each), while the roles
# make and write up to six per node and product. The roles render with
# lookup('template') on the controller and pass the contents here.

DOCUMENTATION = r"""
module: files
short_description: Make directories, write files and remove paths, each only where it differs
options:
  absent:
    description: >-
      Paths to remove first: files, links, or directories with everything
      in them. A path that does not exist is no change.
    type: list
    elements: path
    default: []
  dirs:
    description: Directories to create first, with their parents.
    type: list
    elements: path
    default: []
  dir_mode:
    description: Mode of each of dirs (not of parents that exist).
    type: str
    default: "0700"
  files:
    description: >-
      The files, each a dict with path, content and mode (octal string). A
      file whose content and mode match is not touched, so its mtime tells
      services when it last changed.
    type: list
    elements: dict
    default: []
"""

import os
import shutil
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


def octal(m, what, mode):
    try:
        return int(str(mode), 8)
    except ValueError:
        m.fail_json(msg="%s: mode %r: want an octal mode such as \"0700\"" % (what, mode))


def main():
    m = AnsibleModule(
        argument_spec=dict(
            dirs=dict(type="list", elements="path", default=[]),
            dir_mode=dict(type="str", default="0700"),
            files=dict(type="list", elements="dict", default=[]),
            absent=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    changed = []
    for path in m.params["absent"]:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        changed.append(path)
        if m.check_mode:
            continue
        try:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError as e:
            m.fail_json(msg="remove %s: %s" % (path, e), changed_paths=changed)
    dir_mode = octal(m, "dir_mode", m.params["dir_mode"])
    for path in m.params["dirs"]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            changed.append(path)
            if not m.check_mode:
                os.makedirs(path, dir_mode)
                os.chmod(path, dir_mode)  # makedirs' mode is masked by the umask
            continue
        if not stat.S_ISDIR(st.st_mode):
            m.fail_json(msg="%s exists and is not a directory" % path)
        if stat.S_IMODE(st.st_mode) != dir_mode:
            changed.append(path)
            if not m.check_mode:
                os.chmod(path, dir_mode)
    for i, f in enumerate(m.params["files"]):
        missing = [k for k in ("path", "content", "mode") if k not in f]
        if missing:
            m.fail_json(msg="files[%d]: missing %s" % (i, ", ".join(missing)))
        path = f["path"]
        mode = octal(m, path, f["mode"])
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
