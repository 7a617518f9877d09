#!/usr/bin/python3
# Make directories, write files and remove paths in one module call. ansible.builtin.file
# takes one path, and template and copy cost two module runs per file (a
# stat, then the copy: a Python start on the node each), while the roles
# make and write up to six per node and product. The roles render with
# lookup('template') on the controller and pass the contents here.
#
# It takes its arguments as JSON (see params) rather than through
# AnsibleModule: importing ansible.module_utils.basic from the zip Ansible
# ships it in costs ~0.2 s of CPU per node and task, the most of a task's
# cost on a local node, and these modules run in most tasks of every play.

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
    description: >-
      Directories to create first, with their parents: each a path, or a
      dict with path and mode (octal string) where it needs another mode
      than dir_mode.
    type: list
    elements: raw
    default: []
  dir_mode:
    description: Mode of dirs given as a path (not of parents that exist).
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

import json
import os
import shutil
import stat
import sys
import tempfile

# Ansible puts the task's arguments here (its "jsonargs" module style):
# JSON, where a quote is always escaped or alone, so the raw string holds it.
ARGS = r"""<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>"""

# name: (type, default, types of a list's elements)
SPEC = {
    "absent": (list, [], (str,)),
    "dirs": (list, [], (str, dict)),
    "dir_mode": (str, "0700", None),
    "files": (list, [], (dict,)),
}


def done(**result):
    print(json.dumps(result))
    sys.exit(1 if result.get("failed") else 0)


def fail(msg, **result):
    done(failed=True, msg=msg, **result)


def params(raw, spec):
    """The arguments of spec from raw, and whether Ansible runs in check
    mode; fails on an unknown or mistyped one."""
    args = json.loads(raw)
    unknown = sorted(k for k in args if k not in spec and not k.startswith("_ansible_"))
    if unknown:
        fail("unsupported parameters: %s (supported: %s)" % (", ".join(unknown), ", ".join(sorted(spec))))
    p = {}
    for name, (kind, default, elem) in spec.items():
        v = args.get(name)
        if v is None:
            v = default
        if not isinstance(v, kind) or elem and not all(isinstance(e, elem) for e in v):
            want = "a list of " + " or ".join(k.__name__ for k in elem) if elem else "a " + kind.__name__
            # Not the value: it may be a secret.
            fail("%s: a %s, want %s" % (name, type(v).__name__, want))
        p[name] = v
    return p, bool(args.get("_ansible_check_mode"))


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


def octal(what, mode):
    try:
        return int(str(mode), 8)
    except ValueError:
        fail("%s: mode %r: want an octal mode such as \"0700\"" % (what, mode))


def main():
    p, check_mode = params(ARGS, SPEC)
    changed = []
    for path in p["absent"]:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        changed.append(path)
        if check_mode:
            continue
        try:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError as e:
            fail("remove %s: %s" % (path, e), changed_paths=changed)
    dir_mode = octal("dir_mode", p["dir_mode"])
    for i, d in enumerate(p["dirs"]):
        path, mode = d, dir_mode
        if isinstance(d, dict):
            if not isinstance(d.get("path"), str):
                fail("dirs[%d]: want a path" % i)
            path, mode = d["path"], octal(d["path"], d.get("mode", p["dir_mode"]))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            changed.append(path)
            if not check_mode:
                os.makedirs(path, mode)
                os.chmod(path, mode)  # makedirs' mode is masked by the umask
            continue
        if not stat.S_ISDIR(st.st_mode):
            fail("%s exists and is not a directory" % path)
        if stat.S_IMODE(st.st_mode) != mode:
            changed.append(path)
            if not check_mode:
                os.chmod(path, mode)
    for i, f in enumerate(p["files"]):
        missing = [k for k in ("path", "content", "mode") if k not in f]
        if missing:
            fail("files[%d]: missing %s" % (i, ", ".join(missing)))
        path = f["path"]
        mode = octal(path, f["mode"])
        content = str(f["content"]).encode()
        what = differs(path, content, mode)
        if not what:
            continue
        changed.append(path)
        if check_mode:
            continue
        try:
            if what == "mode":
                os.chmod(path, mode)
            else:
                write(path, content, mode)
        except OSError as e:
            fail("write %s: %s" % (path, e), changed_paths=changed)
    done(changed=bool(changed), changed_paths=changed)


if __name__ == "__main__":
    main()
