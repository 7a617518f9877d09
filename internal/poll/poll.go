// Package poll retries calls to servers that are still settling (a leader
// election, an ACL system not ready yet).
package poll

import (
	"context"
	"time"
)

// Retry calls f until it succeeds, fails with an error permanent reports as
// final, or timeout passes; it waits interval between calls. It returns f's
// last error (nil on success), or the context's error when ctx ends first.
func Retry(ctx context.Context, timeout, interval time.Duration, f func() error, permanent func(error) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || permanent(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
