package stages

import (
	"fmt"
	"slices"
	"strings"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
)

// Token rotation replaces a token, never changes it in place: the old token
// is renamed RetiredTokenPrefix+name and keeps working, the new one is made
// under the name and stored, and the jobs stage deletes the retired tokens
// once the platform jobs run with the new ones. A run killed anywhere
// leaves every holder of a token with one that works.

// RetiredTokenPrefix starts the description (Consul) or name (Nomad) of a
// token that a rotation replaced and the jobs stage will delete.
const RetiredTokenPrefix = "bootstrap (retired): "

// RotateRequested is the value of a rotation's note before the stage began
// it; afterwards the note holds the old token's accessor ID.
const RotateRequested = "requested"

// RotateTokenNote is the note of the consul or nomad stage that marks its
// token name for rotation.
func RotateTokenNote(name string) string { return "rotate_token_" + name }

// EndTokenRotation ends the rotation of the stage's token name once its new
// token exists: what a run applies after making or finding it.
func (e *Env) EndTokenRotation(apply bool, name string) error {
	if !apply || e.Note(RotateTokenNote(name)) == "" {
		return nil
	}
	return e.DeleteNotes(RotateTokenNote(name))
}

// RotatableToken is a token `bootstrap rotate tokens` replaces.
type RotatableToken struct {
	Stage string // consul or nomad
	Name  string // the stage's name for it; "management" is the bootstrap token
	Kind  string // what the user asks to rotate: TokenKinds
}

// TokenKinds are the groups of tokens `bootstrap rotate tokens` takes.
func TokenKinds() []string { return []string{"management", "ui", "metrics", "ci"} }

// RotatableTokens are the tokens a rotation replaces. The agents' own
// tokens and Fabio's are not among them: they never leave the platform.
func RotatableTokens(cfg *config.Platform) []RotatableToken {
	out := []RotatableToken{
		{"consul", "management", "management"},
		{"nomad", "management", "management"},
		{"consul", "operator-read", "ui"},
		{"nomad", "ui-read", "ui"},
		{"consul", "prometheus", "metrics"},
		{"nomad", "prometheus", "metrics"},
	}
	for _, ns := range DeployNamespaces(cfg) {
		out = append(out, RotatableToken{"nomad", "ci-" + ns, "ci"})
	}
	return out
}

// RequestTokenRotation marks the tokens of kinds (every kind when none) for
// the next up to replace, and returns them. A rotation already under way
// is left as it is.
func RequestTokenRotation(st *statedir.State, cfg *config.Platform, kinds []string) ([]RotatableToken, error) {
	for _, k := range kinds {
		if !slices.Contains(TokenKinds(), k) {
			return nil, fmt.Errorf("no tokens of kind %q: use one of %s", k, strings.Join(TokenKinds(), ", "))
		}
	}
	var out []RotatableToken
	for _, t := range RotatableTokens(cfg) {
		if len(kinds) > 0 && !slices.Contains(kinds, t.Kind) {
			continue
		}
		out = append(out, t)
		if st.Note(t.Stage, RotateTokenNote(t.Name)) != "" {
			continue
		}
		if err := st.SetNote(t.Stage, RotateTokenNote(t.Name), RotateRequested); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// RotateCANote is the note of the pki stage that asks for a new
// intermediate CA of ca (consul or nomad); once the stage began, it holds
// the new key's name.
func RotateCANote(ca string) string { return "rotate_ca_" + ca }

// RotatableCAs are the CAs whose intermediate `bootstrap rotate ca` replaces.
func RotatableCAs() []string { return []string{"consul", "nomad"} }

// RequestCARotation marks the intermediate CAs of cas (every one when none)
// for the next up to replace. A rotation already under way is left as it
// is.
func RequestCARotation(st *statedir.State, cas []string) error {
	if len(cas) == 0 {
		cas = RotatableCAs()
	}
	for _, ca := range cas {
		if !slices.Contains(RotatableCAs(), ca) {
			return fmt.Errorf("no CA %q: use one of %s", ca, strings.Join(RotatableCAs(), ", "))
		}
		if st.Note("pki", RotateCANote(ca)) != "" {
			continue
		}
		if err := st.SetNote("pki", RotateCANote(ca), RotateRequested); err != nil {
			return err
		}
	}
	return nil
}
