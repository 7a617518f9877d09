// Package poll retries calls to servers that are still settling (a leader
// election, an ACL system not ready yet).
package poll

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Retry calls f until it succeeds, fails with an error permanent reports as
// final, or timeout passes; it waits interval between calls. It returns f's
// last error (nil on success). When ctx ends first it returns the context's
// error wrapped with f's last one, which is what says why the wait was long.
func Retry(ctx context.Context, timeout, interval time.Duration, f func() error, permanent func(error) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || permanent(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			if err == errNotYet {
				return ctx.Err()
			}
			return fmt.Errorf("%w; the last try: %w", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

// Never is the permanent of Retry that retries every error.
func Never(error) bool { return false }

// errNotYet is what Until's f reports to Retry while it is not done.
var errNotYet = errors.New("not done yet")

// Until calls f until it reports done, fails, or timeout passes; it waits
// interval between calls. An error of f ends the wait at once: f decides
// what is final. After the timeout Until returns context.DeadlineExceeded.
func Until(ctx context.Context, timeout, interval time.Duration, f func() (done bool, err error)) error {
	err := Retry(ctx, timeout, interval, func() error {
		done, err := f()
		if err == nil && !done {
			return errNotYet
		}
		return err
	}, func(err error) bool { return err != errNotYet })
	if err == errNotYet {
		return context.DeadlineExceeded
	}
	return err
}
