package ansible

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the playbook end when bootstrap does, however it
// ends: a bootstrap killed with SIGKILL left its playbook running, still
// changing the nodes while the next run, or down, worked on them.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
