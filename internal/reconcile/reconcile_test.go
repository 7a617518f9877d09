package reconcile

import (
	"errors"
	"testing"
)

func TestPlanDoesNothingApplyDoes(t *testing.T) {
	for _, apply := range []bool{false, true} {
		p := &Plan{Apply: apply}
		ran := 0
		if err := p.Do(Create, "vault mount x", "", func() error { ran++; return nil }); err != nil {
			t.Fatal(err)
		}
		p.Planned(Update, "vault role y", "after x")
		want := 0
		wantChanges := 2
		if apply {
			want, wantChanges = 1, 1
		}
		if ran != want || len(p.Changes) != wantChanges {
			t.Errorf("apply=%v: ran %d times, %d changes; want %d, %d", apply, ran, len(p.Changes), want, wantChanges)
		}
	}
}

func TestApplyErrorNamesTheChange(t *testing.T) {
	p := &Plan{Apply: true}
	boom := errors.New("boom")
	err := p.Do(Delete, "consul policy z", "", func() error { return boom })
	if !errors.Is(err, boom) || err.Error() != "delete consul policy z: boom" || len(p.Changes) != 0 {
		t.Errorf("err = %v, changes %v", err, p.Changes)
	}
}

func TestMarks(t *testing.T) {
	for a, want := range map[Action]string{Create: "+", Update: "~", Delete: "-", Replace: "-/+", Reset: "!"} {
		if a.Mark() != want {
			t.Errorf("%s: mark %q, want %q", a, a.Mark(), want)
		}
	}
}
