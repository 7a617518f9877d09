package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/proc"
)

// Down removes the lab in dir from its state file alone: it powers every
// machine off (kill -TERM of its systemd-nspawn), kills whatever is left in
// the machine's cgroups, unmounts the overlays, deletes the veths, the
// bridges and the outside network namespace, removes the cgroups and the
// machines' files. A lab that is
// already gone, or was half created, is not an error: Down is idempotent.
func Down(ctx context.Context, dir string) error {
	st, err := Load(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range st.Machines {
		if err := stopMachine(ctx, m); err != nil {
			errs = append(errs, err)
		}
	}
	for _, m := range st.Machines {
		if err := proc.UnmountUnder(m.Dir); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: %w", m.Name, err))
		}
	}
	for _, m := range st.Machines {
		if err := detachVolume(ctx, m); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteBridge(ctx, st.Bridge); err != nil {
		errs = append(errs, err)
	}
	if err := deleteOutside(ctx, st); err != nil {
		errs = append(errs, err)
	}
	if err := deleteBridge(ctx, st.PublicBridge); err != nil {
		errs = append(errs, err)
	}
	// A public veth a killed systemd-nspawn left, attached or not.
	for _, m := range st.Machines {
		if err := deleteVeth(ctx, m.PublicVeth); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: %w", m.Name, err))
		}
	}
	for _, m := range st.Machines {
		for _, cg := range m.allCgroups() {
			if err := removeCgroup(cg); err != nil {
				errs = append(errs, fmt.Errorf("machine %s: %w", m.Name, err))
			}
		}
	}
	if len(errs) > 0 {
		// Keep the state: a second Down retries what failed.
		return errors.Join(errs...)
	}
	// Only what the lab wrote; a platform's state directory (.bootstrap
	// next to lab.hcl) stays.
	for _, p := range []string{filepath.Join(dir, "machines"), filepath.Join(dir, "ssh"), st.InventoryFile(), st.ConfigFile()} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("lab down: %w", err))
		}
	}
	if len(errs) == 0 {
		unregister(st)
		if err := os.Remove(filepath.Join(dir, stateFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		os.Remove(dir) // only if empty
	}
	return errors.Join(errs...)
}

// stopMachine powers the machine off and makes sure nothing of it runs.
// The supervisor goes first so it cannot restart nspawn; then every
// systemd-nspawn in the machine's cgroups gets SIGTERM (the guest shuts
// down cleanly), and what is left after the grace period gets SIGKILL.
// Only pids found in the machine's own cgroups, or the recorded supervisor
// whose start time still matches, are signalled.
func stopMachine(ctx context.Context, m Machine) error {
	if supervisorAlive(m) {
		if err := proc.Kill(ctx, m.Supervisor); err != nil {
			return fmt.Errorf("machine %s: stop its supervisor: %w", m.Name, err)
		}
	}
	grace, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pids := cgroupPids(m.allCgroups())
	for i := 0; len(pids) > 0 && grace.Err() == nil; i++ {
		// Again every second: a guest still booting may not have set up
		// the handler of the signal nspawn forwards, and drops it.
		if i%10 == 0 {
			for _, pid := range pids {
				if comm(pid) == "systemd-nspawn" {
					syscall.Kill(pid, syscall.SIGTERM)
				}
			}
		}
		select {
		case <-grace.Done():
		case <-time.After(100 * time.Millisecond):
		}
		pids = cgroupPids(m.allCgroups())
	}
	thaw(m)
	for _, pid := range pids {
		if err := proc.Kill(ctx, pid); err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
	}
	if left := cgroupPids(m.allCgroups()); len(left) > 0 {
		return fmt.Errorf("machine %s: processes %v still run in its cgroups", m.Name, left)
	}
	return nil
}

// allCgroups are the machine's cgroups in every hierarchy.
func (m Machine) allCgroups() []string {
	out := append([]string(nil), m.Cgroups...)
	for _, c := range m.Controllers {
		out = append(out, c.Dir)
	}
	return out
}

// cgroupPids lists the live processes in the cgroups and below.
func cgroupPids(cgs []string) []int {
	seen := map[int]bool{}
	var out []int
	for _, cg := range cgs {
		filepath.WalkDir(cg, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Name() != "cgroup.procs" {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] && proc.Alive(pid) {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	sort.Ints(out)
	return out
}

// removeCgroup removes a cgroup directory and the ones systemd-nspawn and
// the guest made below it, deepest first (a cgroup is removed with rmdir).
func removeCgroup(cg string) error {
	var dirs []string
	filepath.WalkDir(cg, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	// The lab's parent cgroup goes with its last machine.
	parent := filepath.Dir(cg)
	if filepath.Base(parent) == "bootstrap-lab" {
		syscall.Rmdir(parent) // ENOTEMPTY while another lab runs
	}
	return errors.Join(errs...)
}

// deleteBridge deletes the bridge and any veth still attached to it (the
// host side of a machine whose network namespace is still alive).
func deleteBridge(ctx context.Context, br string) error {
	if br == "" {
		return nil
	}
	if _, err := net.InterfaceByName(br); err != nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", br, "bridge")); err != nil {
		return fmt.Errorf("lab down: %s is not a bridge; not deleting it", br)
	}
	ports, _ := os.ReadDir(filepath.Join("/sys/class/net", br, "brif"))
	var errs []error
	for _, p := range ports {
		if err := deleteLink(ctx, p.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteLink(ctx, br); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// deleteLink deletes a link. One that is gone already, or goes while it is
// deleted (the kernel deletes a veth with its peer's network namespace,
// asynchronously), is not an error.
func deleteLink(ctx context.Context, name string) error {
	err := run(ctx, "ip", "link", "del", name)
	if err != nil {
		if _, lerr := net.InterfaceByName(name); lerr != nil {
			return nil
		}
		return fmt.Errorf("lab down: %w", err)
	}
	return nil
}

// deleteVeth deletes the named veth, with its peer, if it exists; a link
// of that name that is not a veth is left alone.
func deleteVeth(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	if _, err := net.InterfaceByName(name); err != nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, "ip", "-o", "-d", "link", "show", "dev", name).Output()
	if err != nil {
		if _, lerr := net.InterfaceByName(name); lerr != nil {
			return nil
		}
		return fmt.Errorf("lab down: ip link show %s: %w", name, err)
	}
	if !bytes.Contains(out, []byte(" veth ")) {
		return fmt.Errorf("lab down: %s is not a veth; not deleting it", name)
	}
	return deleteLink(ctx, name)
}

// deleteOutside deletes the outside network namespace and its veth. The
// veth goes first: deleting it deletes its peer in the namespace at once,
// whereas the kernel cleans up a deleted namespace's links later.
func deleteOutside(ctx context.Context, st *State) error {
	if err := deleteVeth(ctx, st.OutsideVeth); err != nil {
		return err
	}
	if st.OutsideNetns == "" {
		return nil
	}
	if _, err := os.Lstat(netnsFile(st.OutsideNetns)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := run(ctx, "ip", "netns", "del", st.OutsideNetns); err != nil {
		return fmt.Errorf("lab down: %w", err)
	}
	return nil
}

// statFields returns the fields of /proc/pid/stat after the command name
// (field 3, the state, is index 0).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// startTime is when pid started, in clock ticks after boot: with the pid
// it names one process for good.
func startTime(pid int) (uint64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func zombie(pid int) bool {
	f, err := statFields(pid)
	return err != nil || len(f) == 0 || f[0] == "Z" || f[0] == "X"
}

// children lists the live processes whose parent is pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(c)
		if err != nil || len(f) < 2 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if f[1] == strconv.Itoa(pid) {
			out = append(out, c)
		}
	}
	sort.Ints(out)
	return out
}

func comm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

// detachVolume frees every loop device over the machine's volume file,
// also one a killed Up attached without recording it.
func detachVolume(ctx context.Context, m Machine) error {
	img := m.volumeFile()
	if _, err := os.Stat(img); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	out, err := exec.CommandContext(ctx, "losetup", "--noheadings", "--output", "NAME", "--associated", img).Output()
	if err != nil {
		return fmt.Errorf("machine %s: losetup --associated %s: %w", m.Name, img, err)
	}
	for _, dev := range strings.Fields(string(out)) {
		if out, err := exec.CommandContext(ctx, "losetup", "--detach", dev).CombinedOutput(); err != nil {
			return fmt.Errorf("machine %s: losetup --detach %s: %v: %s", m.Name, dev, err, bytes.TrimSpace(out))
		}
	}
	return nil
}
