#!/usr/bin/python3
# Run one service as a background process with a pid file, for nodes without
# systemd (the local provider). One module call instead of three
# start-stop-daemon tasks: every Ansible task costs a round trip per host,
# and this one runs for every service of every node.

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

import os

from ansible.module_utils.basic import AnsibleModule


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
    m = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            binary=dict(type="path", required=True),
            args=dict(type="list", elements="str", default=[]),
            run_dir=dict(type="path", required=True),
            log_dir=dict(type="path", required=True),
            chdir=dict(type="path", required=True),
            restart=dict(type="bool", default=False),
            configs=dict(type="list", elements="path", default=[]),
            hold_stale=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = m.params
    pidfile = os.path.join(p["run_dir"], p["name"] + ".pid")
    ssd = m.get_bin_path("start-stop-daemon", required=True)

    # --status: 0 running, 1 or 3 not running (stale or no pid file).
    rc, _, err = m.run_command([ssd, "--status", "--pidfile", pidfile])
    if rc not in (0, 1, 3):
        m.fail_json(msg="start-stop-daemon --status %s: %s" % (p["name"], err))
    running = rc == 0 and alive(pidfile)
    old = running and stale(pidfile, p["binary"], p["configs"])
    if running and (old and p["hold_stale"] or not p["restart"] and not old):
        m.exit_json(changed=False, state="running", stale=old)
    if m.check_mode:
        m.exit_json(changed=True, state="restarted" if running else "started", stale=False)

    if running:
        rc, _, err = m.run_command([ssd, "--stop", "--pidfile", pidfile,
                                    "--retry", "TERM/30/KILL/5", "--remove-pidfile", "--oknodo"])
        if rc != 0:
            m.fail_json(msg="stop %s: %s" % (p["name"], err))
    # Started under nohup: SIGHUP stays ignored until the program handles it.
    # consul-template sends the agents a SIGHUP when it renews their
    # certificate, and Go kills a program that gets one before it asked for
    # it (Nomad asks only once its agent runs, seconds after starting).
    rc, _, err = m.run_command([ssd, "--start", "--background", "--make-pidfile",
                                "--pidfile", pidfile, "--chdir", p["chdir"],
                                "--output", os.path.join(p["log_dir"], p["name"] + ".log"),
                                "--exec", p["binary"], "--startas", m.get_bin_path("nohup", required=True),
                                "--", p["binary"]] + p["args"])
    if rc != 0:
        m.fail_json(msg="start %s: %s" % (p["name"], err))
    m.exit_json(changed=True, state="restarted" if running else "started", stale=False)


if __name__ == "__main__":
    main()
