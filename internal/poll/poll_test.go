package poll

import (
	"context"
	"errors"
	"testing"
	"time"
)

var (
	errBusy  = errors.New("busy")
	errFinal = errors.New("final")
)

func TestRetry(t *testing.T) {
	ctx := context.Background()
	never := func(error) bool { return false }
	isFinal := func(err error) bool { return errors.Is(err, errFinal) }

	calls := 0
	err := Retry(ctx, time.Second, time.Millisecond, func() error {
		if calls++; calls < 3 {
			return errBusy
		}
		return nil
	}, never)
	if err != nil || calls != 3 {
		t.Errorf("success after two busy answers: err %v, %d calls", err, calls)
	}

	calls = 0
	err = Retry(ctx, time.Second, time.Millisecond, func() error { calls++; return errFinal }, isFinal)
	if !errors.Is(err, errFinal) || calls != 1 {
		t.Errorf("a final error is returned at once: err %v, %d calls", err, calls)
	}

	err = Retry(ctx, 20*time.Millisecond, time.Millisecond, func() error { return errBusy }, never)
	if !errors.Is(err, errBusy) {
		t.Errorf("after the timeout the last error is returned, got %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = Retry(cctx, time.Minute, time.Minute, func() error { return errBusy }, never)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errBusy) {
		t.Errorf("a cancelled context ends the wait and keeps the last error, got %v", err)
	}
}

func TestUntil(t *testing.T) {
	ctx := context.Background()
	calls := 0
	err := Until(ctx, time.Second, time.Millisecond, func() (bool, error) { calls++; return calls == 3, nil })
	if err != nil || calls != 3 {
		t.Errorf("done at the third call: err %v, %d calls", err, calls)
	}
	calls = 0
	err = Until(ctx, time.Second, time.Millisecond, func() (bool, error) { calls++; return false, errFinal })
	if !errors.Is(err, errFinal) || calls != 1 {
		t.Errorf("an error ends the wait at once: err %v, %d calls", err, calls)
	}
	err = Until(ctx, 20*time.Millisecond, time.Millisecond, func() (bool, error) { return false, nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("after the timeout: %v, want context.DeadlineExceeded", err)
	}
}
