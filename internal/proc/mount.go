package proc

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// MountsUnder returns the mount points of this process's mount namespace
// that are dir itself or below it (same boundary rule as Under; the root
// directory is refused), deepest first: the order in which they can be
// unmounted.
func MountsUnder(dir string) ([]string, error) {
	if dir == "" {
		return nil, errors.New("mounts under dir: empty dir")
	}
	roots, err := rootsOf(dir)
	if err != nil {
		return nil, fmt.Errorf("mounts under %s: %w", dir, err)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("mounts under %s: %w", dir, err)
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		// Field 5 is the mount point, with space, tab, newline and
		// backslash escaped as octal.
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if mp := unescapeMount(f[4]); inside(mp, roots) {
			mps = append(mps, mp)
		}
	}
	// Children before parents; a path mounted twice is listed twice and
	// needs two unmounts.
	sort.SliceStable(mps, func(i, j int) bool {
		return strings.Count(mps[i], "/") > strings.Count(mps[j], "/")
	})
	return mps, nil
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// UnmountUnder unmounts everything mounted at or below dir, deepest first.
// A Nomad client running as root mounts a tmpfs on the secrets directory of
// every task and leaves it mounted when the client stops, so the client's
// data directory cannot be removed until this is done. A mount still busy
// is detached lazily (the kernel frees it when its last user goes away).
func UnmountUnder(dir string) error {
	mps, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		err := syscall.Unmount(mp, 0)
		if errors.Is(err, syscall.EBUSY) {
			err = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
		if err != nil && !errors.Is(err, syscall.EINVAL) { // EINVAL: no longer a mount point
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}
