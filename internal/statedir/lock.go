package statedir

import (
	"bytes"
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
	if h.PID == 0 {
		// It took the flock but has not written its record yet.
		return "a run that has just started"
	}
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
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			h, _ := readHolder(path)
			return nil, &LockedError{Dir: dir, Holder: h}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	l := &Lock{f: f}
	// A record left in the file means the previous holder died without
	// releasing (its flock went with it).
	if h, ok := readHolder(path); ok {
		l.Stale = &h
	}
	host, _ := os.Hostname()
	rec, _ := json.Marshal(LockHolder{PID: os.Getpid(), Host: host, Started: time.Now().UTC(), Command: command})
	rec = append(rec, '\n')
	// The record only explains who holds the lock; the flock is what counts.
	// It is written over the old one and the file cut after it (not cut
	// first), so a run killed in between still leaves a record: its own
	// first line, or the previous one.
	if _, err := f.WriteAt(rec, 0); err == nil {
		if err := f.Truncate(int64(len(rec))); err == nil {
			f.Sync()
		}
	}
	return l, nil
}

// readHolder parses the first line of a lock file: the record of the run
// that holds or last held the lock.
func readHolder(path string) (LockHolder, bool) {
	var h LockHolder
	b, err := os.ReadFile(path)
	if err != nil {
		return h, false
	}
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	if json.Unmarshal(line, &h) != nil || h.PID == 0 {
		return LockHolder{}, false
	}
	return h, true
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
