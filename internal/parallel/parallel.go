// Package parallel runs independent work at once and keeps every error:
// stopping five nodes, awaiting four jobs. Unlike errgroup it never stops
// early, so one failure does not hide another or leave work half done.
package parallel

import (
	"errors"
	"sync"
)

// Each runs f on every item at once, waits for all of them and returns
// their errors joined (nil when none failed).
func Each[T any](items []T, f func(T) error) error {
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, item := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(item)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Do runs every f at once, as Each does.
func Do(fs ...func() error) error {
	return Each(fs, func(f func() error) error { return f() })
}
