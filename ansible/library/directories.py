#!/usr/bin/python3
# Make directories with a mode in one module call. ansible.builtin.file
# takes one path, so a loop over a node's directories costs a module run
# (a Python start on the node) per directory, and the roles make ten per
# node per stage.

DOCUMENTATION = r"""
module: directories
short_description: Create directories (and their parents) with a mode
options:
  paths: {description: Directories to create., required: true, type: list, elements: path}
  mode: {description: Mode of each directory (not of parents that exist)., required: true, type: str}
"""

import os
import stat

from ansible.module_utils.basic import AnsibleModule


def main():
    m = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", required=True),
            mode=dict(type="str", required=True),
        ),
        supports_check_mode=True,
    )
    try:
        mode = int(m.params["mode"], 8)
    except ValueError:
        m.fail_json(msg="mode %r: want an octal mode such as \"0700\"" % m.params["mode"])
    changed = []
    for path in m.params["paths"]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            changed.append(path)
            if not m.check_mode:
                os.makedirs(path, mode)
                os.chmod(path, mode)  # makedirs' mode is masked by the umask
            continue
        if not stat.S_ISDIR(st.st_mode):
            m.fail_json(msg="%s exists and is not a directory" % path)
        if stat.S_IMODE(st.st_mode) != mode:
            changed.append(path)
            if not m.check_mode:
                os.chmod(path, mode)
    m.exit_json(changed=bool(changed), changed_paths=changed)


if __name__ == "__main__":
    main()
