package parallel

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestEachRunsAllAtOnceAndKeepsEveryError(t *testing.T) {
	errA, errC := errors.New("a failed"), errors.New("c failed")
	var running, most atomic.Int32
	err := Each([]string{"a", "b", "c"}, func(s string) error {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(50 * time.Millisecond)
		running.Add(-1)
		switch s {
		case "a":
			return errA
		case "c":
			return errC
		}
		return nil
	})
	if !errors.Is(err, errA) || !errors.Is(err, errC) {
		t.Errorf("error %v, want both a's and c's", err)
	}
	if most.Load() != 3 {
		t.Errorf("%d ran at once, want 3", most.Load())
	}
	if err := Do(func() error { return nil }); err != nil {
		t.Errorf("Do with no failure: %v", err)
	}
	if err := Each[int](nil, nil); err != nil {
		t.Errorf("Each of nothing: %v", err)
	}
}
