#!/usr/bin/python3
# Run one service as a background process with a pid file, for nodes without
# systemd (the local provider). One module call instead of three
# start-stop-daemon tasks: every Ansible task costs a round trip per host,
# and this one runs for every service of every node. It takes its
# arguments as JSON, as the files module does and for the same reason;
# done, fail and params are like that module's (Ansible sends a jsonargs
# module alone, without module_utils, so the two cannot share them).

DOCUMENTATION = r"""
module: process_service
short_description: Keep a service running as a process with a pid file
options:
  name: {description: Service name (pid file and log file names)., required: true, type: str}
  binary: {description: Program to run., required: true, type: path}
  args: {description: Its arguments., type: list, elements: str, default: []}
  run_dir: {description: Directory of the pid file., required: true, type: path}
  log_dir: {description: Directory of the log file (stdout and stderr)., required: true, type: path}
  chdir: {description: Working directory., required: true, type: path}
  restart: {description: Restart it if it runs (its configuration changed)., type: bool, default: false}
  configs:
    description: >-
      Files it reads at start: one modified since it started makes it stale,
      whether it changed in this run or in one killed before the restart.
    type: list
    elements: path
    default: []
  hold_stale:
    description: >-
      Leave it running when it is stale (it runs a binary other than the one
      given, replaced by an upgrade, or one of configs is newer than it),
      even with restart set: a later play restarts it in the order the
      upgrade or the change needs. Reported as stale.
    type: bool
    default: false
"""

import json
import os
import shutil
import subprocess
import sys

ARGS = r"""<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>"""

REQUIRED = object()

# What AnsibleModule reads as a bool, for a templated string.
BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}

# name: (type, default, types of a list's elements)
SPEC = {
    "name": (str, REQUIRED, None),
    "binary": (str, REQUIRED, None),
    "args": (list, [], (str,)),
    "run_dir": (str, REQUIRED, None),
    "log_dir": (str, REQUIRED, None),
    "chdir": (str, REQUIRED, None),
    "restart": (bool, False, None),
    "configs": (list, [], (str,)),
    "hold_stale": (bool, False, None),
}


def done(**result):
    print(json.dumps(result))
    sys.exit(1 if result.get("failed") else 0)


def fail(msg, **result):
    done(failed=True, msg=msg, **result)


def params(raw, spec):
    """The arguments of spec from raw, and whether Ansible runs in check
    mode; fails on a missing, unknown or mistyped one."""
    args = json.loads(raw)
    unknown = sorted(k for k in args if k not in spec and not k.startswith("_ansible_"))
    if unknown:
        fail("unsupported parameters: %s (supported: %s)" % (", ".join(unknown), ", ".join(sorted(spec))))
    p = {}
    for name, (kind, default, elem) in spec.items():
        v = args.get(name)
        if v is None:
            if default is REQUIRED:
                fail("missing required argument: %s" % name)
            v = default
        if kind is bool and isinstance(v, str) and v.lower() in BOOLS:
            v = BOOLS[v.lower()]
        if not isinstance(v, kind) or elem and not all(isinstance(e, elem) for e in v):
            want = "a list of " + " or ".join(k.__name__ for k in elem) if elem else "a " + kind.__name__
            fail("%s: a %s, want %s" % (name, type(v).__name__, want))
        p[name] = v
    return p, bool(args.get("_ansible_check_mode"))


def run(argv):
    """Runs argv; its exit status and standard error. Its standard input is
    /dev/null: the module's own is Ansible's pipe, which a daemon started
    from here must not hold."""
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return r.returncode, r.stderr.decode(errors="replace").strip()


def which(name):
    # The sbin directories as AnsibleModule.get_bin_path: a user's PATH,
    # which local nodes inherit, may lack them.
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/sbin:/usr/sbin:/usr/local/sbin")
    if not path:
        fail("%s is not installed (in PATH or an sbin directory)" % name)
    return path


def alive(pidfile):
    """Whether the pid file names a process that runs. start-stop-daemon
    also counts a process that died and was not reaped (a zombie: in a
    container whose PID 1 does not reap orphans it stays so until the
    container stops), and one reaped between its check and this one."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/stat" % pid) as f:
            # The state follows the command name, which is in parentheses
            # and may hold spaces.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, ValueError, IndexError):
        return False


def stale(pidfile, binary, configs):
    """Whether the process of the pid file runs another program than
    binary (a symlink now pointing elsewhere, or a file replaced since it
    started: its exe then ends in " (deleted)"), or started before one of
    configs was last modified (the pid file is written at its start)."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        if os.readlink("/proc/%d/exe" % pid) != os.path.realpath(binary):
            return True
        started = os.stat(pidfile).st_mtime
        return any(os.path.exists(c) and os.stat(c).st_mtime > started for c in configs)
    except (OSError, ValueError):
        return False


def main():
    p, check_mode = params(ARGS, SPEC)
    pidfile = os.path.join(p["run_dir"], p["name"] + ".pid")
    ssd = which("start-stop-daemon")

    # --status: 0 running, 1 or 3 not running (stale or no pid file).
    rc, err = run([ssd, "--status", "--pidfile", pidfile])
    if rc not in (0, 1, 3):
        fail("start-stop-daemon --status %s: %s" % (p["name"], err))
    running = rc == 0 and alive(pidfile)
    old = running and stale(pidfile, p["binary"], p["configs"])
    if running and (old and p["hold_stale"] or not p["restart"] and not old):
        done(changed=False, state="running", stale=old)
    if check_mode:
        done(changed=True, state="restarted" if running else "started", stale=False)

    if running:
        rc, err = run([ssd, "--stop", "--pidfile", pidfile,
                       "--retry", "TERM/30/KILL/5", "--remove-pidfile", "--oknodo"])
        if rc != 0:
            fail("stop %s: %s" % (p["name"], err))
    # Started under nohup: SIGHUP stays ignored until the program handles it.
    # consul-template sends the agents a SIGHUP when it renews their
    # certificate, and Go kills a program that gets one before it asked for
    # it (Nomad asks only once its agent runs, seconds after starting).
    rc, err = run([ssd, "--start", "--background", "--make-pidfile",
                   "--pidfile", pidfile, "--chdir", p["chdir"],
                   "--output", os.path.join(p["log_dir"], p["name"] + ".log"),
                   "--exec", p["binary"], "--startas", which("nohup"),
                   "--", p["binary"]] + p["args"])
    if rc != 0:
        fail("start %s: %s" % (p["name"], err))
    done(changed=True, state="restarted" if running else "started", stale=False)


if __name__ == "__main__":
    main()
