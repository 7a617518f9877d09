package stages

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
)

// Session is one locked run against a state directory: the lock, the state,
// the secret store and the run's log file and history record.
type Session struct {
	Dir     string
	Lock    *statedir.Lock
	State   *statedir.State
	Secrets *secrets.Store
	RunID   string
	LogPath string

	mu      sync.Mutex
	log     *os.File
	logw    *secrets.LineWriter
	command string
	started time.Time
}

// Open creates the state directory if needed (0700), takes its lock, and
// opens the state, the secret store and a new log file. A statedir.LockedError means
// another run holds the directory.
func Open(dir, command string, red *secrets.Redactor) (*Session, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	lock, err := statedir.AcquireLock(dir, command)
	if err != nil {
		return nil, err
	}
	s := &Session{Dir: dir, Lock: lock, command: command, started: time.Now().UTC()}
	fail := func(err error) (*Session, error) {
		lock.Release()
		return nil, err
	}
	if err := removeTemps(dir); err != nil {
		return fail(err)
	}
	if s.State, err = statedir.Load(dir); err != nil {
		return fail(err)
	}
	if s.Secrets, err = secrets.Open(filepath.Join(dir, "secrets"), red); err != nil {
		return fail(err)
	}
	s.RunID = s.started.Format("20060102T150405.000Z") + "-" + strings.ReplaceAll(command, " ", "-")
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o700); err != nil {
		return fail(fmt.Errorf("log directory: %w", err))
	}
	s.LogPath = filepath.Join(logs, s.RunID+".log")
	if s.log, err = os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return fail(fmt.Errorf("log file: %w", err))
	}
	s.logw = red.Writer(s.log)
	return s, nil
}

// OpenReadOnly opens the state and the secret store of dir without taking
// the lock, for commands that only read (status, env). Such a command may run
// beside an `up`, so it deletes nothing: a temporary file in the directory may
// be that run's atomic write in flight.
func OpenReadOnly(dir string, red *secrets.Redactor) (*statedir.State, *secrets.Store, error) {
	state, err := statedir.Load(dir)
	if err != nil {
		return nil, nil, err
	}
	store, err := secrets.Open(filepath.Join(dir, "secrets"), red)
	if err != nil {
		return nil, nil, err
	}
	return state, store, nil
}

// removeTemps removes the temporary files that runs killed in the middle of
// an atomic write left in the state directory, the run history and the
// secret store. Only the lock holder may call it: then no one else is
// writing, so no temporary file is a write in flight.
func removeTemps(dir string) error {
	errs := []error{fsutil.RemoveTemps(dir), fsutil.RemoveTemps(filepath.Join(dir, "runs")), fsutil.RemoveTemps(filepath.Join(dir, RestoreDir))}
	secretDir := filepath.Join(dir, "secrets")
	err := filepath.WalkDir(secretDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == secretDir && errors.Is(err, fs.ErrNotExist) {
				return nil // no secrets yet
			}
			return err
		}
		if d.IsDir() {
			errs = append(errs, fsutil.RemoveTemps(path))
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("clean %s: %w", secretDir, err))
	}
	return errors.Join(errs...)
}

// LogWriter is the run's log file, redacted line by line.
func (s *Session) LogWriter() io.Writer { return s.logw }

// Close records the run in the history, closes the log and releases the lock.
func (s *Session) Close(results []statedir.StageResult, runErr error) error {
	outcome := "ok"
	if runErr != nil {
		outcome = "failed"
	}
	rec := statedir.RunRecord{
		ID: s.RunID, Command: s.command, Started: s.started, Finished: time.Now().UTC(),
		Outcome: outcome, Stages: results, LogFile: s.LogPath,
	}
	red := s.Secrets.Redactor()
	if runErr != nil {
		rec.Error = red.String(runErr.Error())
	}
	// The history outlives the run; it must not keep a secret a stage put
	// in an error or a change.
	rec.Stages = make([]statedir.StageResult, len(results))
	for i, r := range results {
		r.Error = red.String(r.Error)
		r.Changes = redactChanges(red, r.Changes)
		rec.Stages[i] = r
	}
	err := statedir.SaveRun(s.Dir, rec)
	s.mu.Lock()
	err = errors.Join(err, s.logw.Close(), s.log.Close())
	s.mu.Unlock()
	return errors.Join(err, s.Lock.Release())
}

// Purge removes everything a platform left in the state directory — node
// trees, certificates, secrets, the state itself — keeping only the run
// history and logs (redacted) and the lock this session holds. It is the
// last step of a complete `down`: keys of a destroyed Vault would only make
// the next `up` refuse to initialise a new one.
func (s *Session) Purge() error {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return fmt.Errorf("purge %s: %w", s.Dir, err)
	}
	var errs []error
	for _, ent := range entries {
		switch ent.Name() {
		case "logs", "runs", statedir.LockFile:
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(s.Dir, ent.Name())))
	}
	return errors.Join(errs...)
}
