package pki

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/stages"
)

// The secret ID of the MobileID configuration's AppRole.
const (
	approleName  = "django-backend"
	secretIDName = stages.SecretVaultAppRolePrefix + approleName + "/secret-id"
	accessorKey  = "vault_approle_" + approleName + "_secret_id_accessor"
	expiresKey   = "vault_approle_" + approleName + "_secret_id_expires"
	approlePath  = "auth/approle/role/" + approleName
)

// moveClock makes the reconciler see the time d from now until the test
// ends.
func moveClock(t *testing.T, d time.Duration) {
	t.Cleanup(func() { now = time.Now })
	now = func() time.Time { return time.Now().Add(d) }
}

// targets lists the action and target of each change, without details
// (which hold times).
func targets(cs []stages.Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, string(c.Action)+" "+c.Target)
	}
	return out
}

func (h *harness) approleLogin(secretID string) error {
	h.t.Helper()
	_, err := h.tokenClient("").Logical().Write("auth/approle/login", map[string]any{
		"role_id":   h.env.State.Output(stages.OutVaultAppRolePrefix + approleName + "_role_id"),
		"secret_id": secretID,
	})
	return err
}

// TestSecretIDRotation: an AppRole's secret ID expires (secret_id_ttl,
// default 720h) and a run past half its life issues the next one; the old
// one keeps working until it expires. One that never expires (issued by an
// earlier bootstrap) is replaced and destroyed. A converged run writes
// nothing.
func TestSecretIDRotation(t *testing.T) {
	h := newHarness(t, mobileID)
	h.apply()

	role, err := h.client().Logical().Read(approlePath)
	if err != nil || role == nil {
		t.Fatalf("read approle: %v", err)
	}
	if got := num(role.Data, "secret_id_ttl"); got != int64(DefaultSecretIDTTL.Seconds()) {
		t.Errorf("role secret_id_ttl = %ds, want %s", got, DefaultSecretIDTTL)
	}
	if got := num(role.Data, "secret_id_num_uses"); got != 0 {
		t.Errorf("role secret_id_num_uses = %d, want 0 (unlimited)", got)
	}
	expires, err := time.Parse(time.RFC3339, h.env.Note(expiresKey))
	if err != nil {
		t.Fatalf("expiry output: %v", err)
	}
	if d := time.Until(expires); d < DefaultSecretIDTTL-time.Hour || d > DefaultSecretIDTTL {
		t.Errorf("the secret id expires in %s, want about %s", d, DefaultSecretIDTTL)
	}
	// Vault agrees: the secret id has the TTL.
	l, err := h.client().Logical().Write(approlePath+"/secret-id/lookup", map[string]any{"secret_id": h.secret(secretIDName)})
	if err != nil || l == nil || num(l.Data, "secret_id_ttl") != int64(DefaultSecretIDTTL.Seconds()) {
		t.Fatalf("lookup of the stored secret id: %v %v", l, err)
	}

	rotation := []string{
		"rotate vault approle " + approleName + " secret id",
		"update vault kv secret/bootstrap/" + secretIDName,
	}

	t.Run("before half its life nothing happens", func(t *testing.T) {
		moveClock(t, DefaultSecretIDTTL/2-time.Hour)
		mark := h.auditMark()
		if p := h.plan(); len(p.Changes) > 0 {
			t.Fatalf("plan:\n%s", changeList(p.Changes))
		}
		if a := h.apply(); len(a.Changes) > 0 {
			t.Fatalf("apply:\n%s", changeList(a.Changes))
		}
		if w := h.writesSince(mark); len(w) > 0 {
			t.Fatalf("a converged run wrote %q", w)
		}
	})

	t.Run("past half its life it is rotated", func(t *testing.T) {
		moveClock(t, DefaultSecretIDTTL/2+time.Hour)
		old := h.secret(secretIDName)
		mark := h.auditMark()
		p := h.plan()
		if !slices.Equal(targets(p.Changes), rotation) || !strings.Contains(p.Changes[0].Detail, "past half its 720h life") {
			t.Fatalf("plan:\n%s", changeList(p.Changes))
		}
		if w := h.writesSince(mark); len(w) > 0 {
			t.Fatalf("plan wrote %q", w)
		}
		if a := h.apply(); !slices.Equal(targets(a.Changes), rotation) {
			t.Fatalf("apply:\n%s", changeList(a.Changes))
		}
		id := h.secret(secretIDName)
		if id == old {
			t.Fatal("the secret id was not replaced")
		}
		if err := h.approleLogin(id); err != nil {
			t.Errorf("login with the new secret id: %v", err)
		}
		// Its users have the rest of its life to pick up the new one.
		if err := h.approleLogin(old); err != nil {
			t.Errorf("the old secret id stopped working before it expired: %v", err)
		}
		if kv, err := KVDiffers(t.Context(), h.client(), secretIDName, id); err != nil || kv {
			t.Errorf("the KV copy is not the new secret id: %v", err)
		}
		mark = h.auditMark()
		if p := h.plan(); len(p.Changes) > 0 {
			t.Fatalf("plan after the rotation:\n%s", changeList(p.Changes))
		}
		if w := h.writesSince(mark); len(w) > 0 {
			t.Fatalf("plan wrote %q", w)
		}
	})

	t.Run("one that never expires is replaced and destroyed", func(t *testing.T) {
		// What an earlier bootstrap left: a role without secret_id_ttl, a
		// secret id that never expires, no expiry on record.
		admin := h.client()
		if _, err := admin.Logical().Write(approlePath, map[string]any{"secret_id_ttl": 0}); err != nil {
			t.Fatal(err)
		}
		eternal := "legacy-" + newSecretID()
		s, err := admin.Logical().Write(approlePath+"/custom-secret-id", map[string]any{"secret_id": eternal})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.env.Secrets.Put(secretIDName, eternal); err != nil {
			t.Fatal(err)
		}
		if err := h.env.SetNote(accessorKey, str(s.Data, "secret_id_accessor")); err != nil {
			t.Fatal(err)
		}
		if err := h.env.DeleteNotes(expiresKey); err != nil {
			t.Fatal(err)
		}
		want := append([]string{"update vault approle " + approlePath}, rotation...)
		p := h.plan()
		if !slices.Equal(targets(p.Changes), want) || !strings.Contains(p.Changes[1].Detail, "expiry is not recorded") {
			t.Fatalf("plan:\n%s", changeList(p.Changes))
		}
		if a := h.apply(); !slices.Equal(targets(a.Changes), want) {
			t.Fatalf("apply:\n%s", changeList(a.Changes))
		}
		if err := h.approleLogin(eternal); err == nil {
			t.Error("the secret id that never expires still works")
		}
		if err := h.approleLogin(h.secret(secretIDName)); err != nil {
			t.Errorf("login with the new secret id: %v", err)
		}
		if p := h.plan(); len(p.Changes) > 0 {
			t.Fatalf("plan after apply:\n%s", changeList(p.Changes))
		}
	})

	t.Run("a shorter secret_id_ttl rotates at once", func(t *testing.T) {
		h.cfg.PKI.AppRoles[0].SecretIDTTL = "24h"
		t.Cleanup(func() { h.cfg.PKI.AppRoles[0].SecretIDTTL = "" })
		want := append([]string{"update vault approle " + approlePath}, rotation...)
		p := h.plan()
		if !slices.Equal(targets(p.Changes), want) || !strings.Contains(p.Changes[1].Detail, "later than secret_id_ttl 24h allows") {
			t.Fatalf("plan:\n%s", changeList(p.Changes))
		}
		h.apply()
		expires, err := time.Parse(time.RFC3339, h.env.Note(expiresKey))
		if err != nil || time.Until(expires) > 24*time.Hour {
			t.Errorf("expiry %v (%v), want within 24h", expires, err)
		}
		if p := h.plan(); len(p.Changes) > 0 {
			t.Fatalf("plan after apply:\n%s", changeList(p.Changes))
		}
	})

	t.Run("a rotation killed anywhere is finished by the next run", func(t *testing.T) {
		// Due by the record; the children run with the real clock.
		soon := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		if err := h.env.SetNote(expiresKey, soon); err != nil {
			t.Fatal(err)
		}
		old := h.secret(secretIDName)
		for _, p := range []string{"pki/secret-id-stored", "pki/secret-id-registered"} {
			cmd := h.child(p)
			if !killed(t, cmd, cmd.Wait()) {
				t.Fatalf("crash point %s was never reached", p)
			}
		}
		h.reload()
		h.apply()
		h.converged()
		if h.secret(secretIDName) == old {
			t.Error("the due secret id was not replaced")
		}
		if err := h.approleLogin(old); err != nil {
			t.Errorf("the old secret id stopped working before it expired: %v", err)
		}
	})
}

func TestRotationDue(t *testing.T) {
	moveClock(t, 0)
	at := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }
	ttl := 720 * time.Hour
	for _, tc := range []struct {
		expires string
		due     string // a word of the reason, or "" for not due
	}{
		{at(719 * time.Hour), ""},
		{at(361 * time.Hour), ""},
		{at(359 * time.Hour), "past half"},
		{at(-time.Hour), "expired"},
		{at(1000 * time.Hour), "later than secret_id_ttl"},
		{"", "not recorded"},
		{"next tuesday", "unreadable"},
	} {
		got := rotationDue(tc.expires, ttl)
		if tc.due == "" && got != "" || tc.due != "" && !strings.Contains(got, tc.due) {
			t.Errorf("rotationDue(%q) = %q, want %q", tc.expires, got, tc.due)
		}
	}
}
