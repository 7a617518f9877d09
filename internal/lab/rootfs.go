package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Suite is the Debian release the machines run.
const Suite = "bookworm"

// Packages are installed into the rootfs on top of debootstrap's minbase:
// systemd as PID 1, sshd for bootstrap, python3 for Ansible, and a Docker
// engine, which the machines cannot fetch (they reach no mirror): it stays
// disabled, as on a machine image with Docker installed, until bootstrap's
// docker role starts it.
var Packages = []string{"systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "python3", "sudo", "docker.io"}

// recipe versions what prepareRootfs does after debootstrap; it is part of
// the cache key so a changed recipe builds a new rootfs.
const recipe = "2"

// RootfsKey is the cache key of the rootfs: its suite, package list and
// recipe.
func RootfsKey() string { return rootfsKey(Suite, Packages) }

func rootfsKey(suite string, packages []string) string {
	h := sha256.Sum256([]byte(suite + "\n" + strings.Join(packages, ",") + "\n" + recipe))
	return hex.EncodeToString(h[:])[:16]
}

// DefaultCacheDir is where rootfs builds are kept, outside any repository.
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("lab cache dir: %w", err)
	}
	return filepath.Join(d, "bootstrap", "lab"), nil
}

// Rootfs returns the cached Debian rootfs, building it first when missing.
// The build goes to a temporary directory that is renamed into place only
// when complete, so a killed build is never taken for a cache hit; a lock
// file makes concurrent callers wait for one build.
func Rootfs(ctx context.Context, cacheDir, mirror string, log io.Writer) (string, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("rootfs: %w", err)
	}
	final := filepath.Join(cacheDir, "rootfs-"+RootfsKey())
	if done(final) {
		return final, nil
	}
	lock, err := os.OpenFile(final+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("rootfs lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("rootfs lock: %w", err)
	}
	if done(final) { // another process built it while we waited
		return final, nil
	}
	// Whatever a killed build left is garbage: we hold the lock.
	tmp := final + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", fmt.Errorf("rootfs: remove a killed build: %w", err)
	}
	if mirror == "" {
		mirror = Mirror()
	}
	fmt.Fprintf(log, "lab: building the %s rootfs with debootstrap from %s (a few minutes, once)\n", Suite, mirror)
	args := []string{"--variant=minbase", "--include=" + strings.Join(Packages, ","), Suite, tmp, mirror}
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("debootstrap %s: %w", Suite, err)
	}
	if err := prepareRootfs(ctx, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".lab-rootfs"), []byte(RootfsKey()+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("rootfs: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("rootfs: %w", err)
	}
	return final, nil
}

func done(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, ".lab-rootfs"))
	return err == nil
}

// prepareRootfs makes the rootfs a template every machine shares: the
// network comes from systemd-networkd, and whatever must differ between
// machines (machine-id, SSH host keys) is removed so each machine gets its
// own in its overlay.
func prepareRootfs(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, "systemctl", "--root="+dir, "enable", "systemd-networkd.service")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("rootfs: enable systemd-networkd: %w\n%s", err, out)
	}
	cmd = exec.CommandContext(ctx, "systemctl", "--root="+dir, "disable", "docker.service", "docker.socket", "containerd.service")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("rootfs: disable docker: %w\n%s", err, out)
	}
	keys, _ := filepath.Glob(filepath.Join(dir, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	for _, f := range []string{"etc/machine-id", "var/lib/dbus/machine-id"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	// The package lists and downloaded .debs are not needed on machines.
	for _, g := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages"} {
		m, _ := filepath.Glob(filepath.Join(dir, g))
		for _, f := range m {
			os.Remove(f)
		}
	}
	return nil
}

// Mirror is the Debian mirror this machine's apt uses for Suite (from
// /etc/apt/sources.list and sources.list.d), or deb.debian.org.
func Mirror() string {
	files := []string{"/etc/apt/sources.list"}
	d, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append(files, d...)
	for _, f := range files {
		if m := mirrorIn(f); m != "" {
			return m
		}
	}
	return "http://deb.debian.org/debian"
}

// mirrorIn finds a URI serving Suite in a one-line (.list) or deb822
// (.sources) apt source file.
func mirrorIn(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var uris, suites []string
	var typeDeb bool
	check := func() string {
		if typeDeb {
			for _, s := range suites {
				if s == Suite && len(uris) > 0 {
					return uris[0]
				}
			}
		}
		return ""
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if line == "" { // end of a deb822 stanza
			if m := check(); m != "" {
				return m
			}
			uris, suites, typeDeb = nil, nil, false
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.Contains(k, " ") {
			switch strings.ToLower(k) {
			case "types":
				typeDeb = strings.Contains(" "+v+" ", " deb ")
			case "uris":
				uris = strings.Fields(v)
			case "suites":
				suites = strings.Fields(v)
			}
			continue
		}
		// deb [options] URI suite components...
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 2 && f[1] == Suite {
			return f[0]
		}
	}
	return check()
}
