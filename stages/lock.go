package stages

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LockHolder describes the run holding a state directory.
type LockHolder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
	Command string    `json:"command"`
}

func (h LockHolder) String() string {
	return fmt.Sprintf("pid %d on %s (%s, started %s)", h.PID, h.Host, h.Command, h.Started.Format(time.RFC3339))
}

// LockedError is returned when another live run holds the lock.
type LockedError struct {
	Dir    string
	Holder LockHolder
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("state directory %s is locked by another run: %s; wait for it to finish", e.Dir, e.Holder)
}

// Lock is an exclusive flock on a state directory. The kernel drops a flock
// when its process dies, however it dies, so a lock can never stay stuck
// after Ctrl-C or SIGKILL; the holder record only explains who holds it.
type Lock struct {
	f *os.File
	// Stale is the holder record a dead run left behind, if any.
	Stale *LockHolder
}

// LockFile is the lock's file name inside the state directory.
const LockFile = "lock"

// AcquireLock takes the lock on dir without waiting.
func AcquireLock(dir, command string) (*Lock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		var h LockHolder
		b, _ := os.ReadFile(path)
		_ = json.Unmarshal(b, &h)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{Dir: dir, Holder: h}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	l := &Lock{f: f}
	// A record left in the file means the previous holder died without
	// releasing (its flock went with it).
	if b, _ := os.ReadFile(path); len(b) > 0 {
		var h LockHolder
		if json.Unmarshal(b, &h) == nil && h.PID != 0 {
			l.Stale = &h
		}
	}
	host, _ := os.Hostname()
	rec, _ := json.Marshal(LockHolder{PID: os.Getpid(), Host: host, Started: time.Now().UTC(), Command: command})
	// The record only explains who holds the lock; the flock is what counts.
	if err := f.Truncate(0); err == nil {
		if _, err := f.WriteAt(append(rec, '\n'), 0); err == nil {
			f.Sync()
		}
	}
	return l, nil
}

// Release clears the holder record and drops the lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Truncate(0)
	if e := unix.Flock(int(l.f.Fd()), unix.LOCK_UN); err == nil {
		err = e
	}
	if e := l.f.Close(); err == nil {
		err = e
	}
	l.f = nil
	return err
}
