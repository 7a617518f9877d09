package pki

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// consul-template's tokens are periodic: valid as long as the daemon renews
// them at least once a period, with no maximum lifetime, so a platform
// keeps issuing certificates unattended. The period bounds how long a token
// outlives its renewer: three days let a node be down over a weekend and
// come back; a token nobody renews (a node taken away, a copy that leaked)
// dies within them. Each token is also bound to its node's addresses.
const consulTemplatePeriod = 72 * time.Hour

// adminTokenTTL bounds a stored admin token; bootstrap logs in again with the
// stored password when it has expired.
const adminTokenTTL = 8 * time.Hour

// output records a state output, as a planned change when it differs.
func (r *reconciler) output(key, value string) error {
	if r.e.State.Output(key) == value {
		return nil
	}
	return r.change("record", "output "+key, "", func() error {
		return r.e.State.SetOutput(key, value)
	})
}

// noteRootTokenRevoked is "true" once the stage revoked the root token.
const noteRootTokenRevoked = "vault_root_token_revoked"

// tokenValid reports whether tok is a live token carrying policy. It uses
// lookup-self, a read, so checking tokens writes nothing.
func tokenValid(ctx context.Context, c *api.Client, tok, policy string) (bool, error) {
	tc, err := c.Clone()
	if err != nil {
		return false, err
	}
	tc.SetToken(tok)
	s, err := tc.Auth().Token().LookupSelfWithContext(ctx)
	if isDenied(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up a stored vault token: %w", err)
	}
	if s == nil {
		return false, nil
	}
	pols, _ := s.TokenPolicies()
	return slices.Contains(pols, policy), nil
}

func (r *reconciler) appRoles(ctx context.Context) error {
	mounted := r.authMounted(AppRolePath)
	for _, a := range r.spec.AppRoles {
		path := "auth/" + AppRolePath + "/role/" + a.Name
		policy := AppRolePolicy(a.Name)
		err := r.object(ctx, "approle", path, mounted, fields{
			"token_policies": []string{policy},
			"token_ttl":      a.TokenTTL,
			"token_max_ttl":  a.TokenTTL,
			"bind_secret_id": true,
			// A secret ID that leaks is only good until it expires; bootstrap
			// issues the next one long before (see secretID).
			"secret_id_ttl": a.SecretIDTTL,
			// No use limit: an application logs in again whenever its token
			// expires, and a used-up ID would lock it out mid-life.
			"secret_id_num_uses": 0,
		}, "policy "+policy+", token ttl "+fmtDuration(a.TokenTTL)+", secret id ttl "+fmtDuration(a.SecretIDTTL))
		if err != nil {
			return err
		}
		var s *api.Secret
		if mounted || r.plan.Apply {
			s, err = r.c.Logical().ReadWithContext(ctx, path+"/role-id")
			if err != nil && !isNotFound(err) {
				return fmt.Errorf("read role id of approle %s: %w", a.Name, err)
			}
		}
		if s == nil {
			if r.plan.Apply {
				return fmt.Errorf("approle %s has no role id after it was written", a.Name)
			}
			// The role is created first; its identifiers follow.
			r.planned("record", "output "+stages.OutVaultAppRolePrefix+a.Name+"_role_id", "")
			r.planned("create", "vault approle "+a.Name+" secret id", "")
			r.planned("create", "vault kv "+KVMount+"/"+KVPrefix+"/"+stages.SecretVaultAppRolePrefix+a.Name+"/secret-id", "")
			continue
		}
		if err := r.output(stages.OutVaultAppRolePrefix+a.Name+"_role_id", str(s.Data, "role_id")); err != nil {
			return err
		}
		if err := r.secretID(ctx, a); err != nil {
			return err
		}
	}
	return nil
}

// now is the clock secret ID rotation goes by; tests move it forward.
var now = time.Now

// secretIDKeys names where one AppRole's secret ID is kept: the secret
// store entry, and the stage's notes of its accessor and expiry.
type secretIDKeys struct {
	path, secret, accessor, expires string
}

func secretIDKeysOf(name string) secretIDKeys {
	return secretIDKeys{
		path:     "auth/" + AppRolePath + "/role/" + name,
		secret:   stages.SecretVaultAppRolePrefix + name + "/secret-id",
		accessor: "vault_approle_" + name + "_secret_id_accessor",
		expires:  "vault_approle_" + name + "_secret_id_expires",
	}
}

// secretID makes sure the AppRole has the secret ID kept in the store, and
// that it has at least half its life ahead. A new ID is generated here and
// stored before Vault learns it, so a kill at any point leaves no
// credential that only Vault knows; and an ID Vault no longer has
// (destroyed because it leaked, say) is replaced by a new one, never
// registered again.
//
// Whether the ID exists is asked of Vault (its accessor is listed); when it
// expires is what Vault said when it was issued, recorded in the state:
// Vault can tell only through a lookup, which is a write, and a converged
// run writes nothing.
func (r *reconciler) secretID(ctx context.Context, a AppRole) error {
	k := secretIDKeysOf(a.Name)
	target := "vault approle " + a.Name + " secret id"
	id, ok, err := r.e.Secrets.Get(k.secret)
	if err != nil {
		return err
	}
	listed := false
	if acc := r.e.Note(k.accessor); ok && acc != "" {
		// Listing accessors is a read; the secret-id lookup is a write.
		s, err := r.c.Logical().ListWithContext(ctx, k.path+"/secret-id")
		if err != nil {
			return fmt.Errorf("list secret ids of approle %s: %w", a.Name, err)
		}
		listed = s != nil && slices.Contains(strs(s.Data, "keys"), acc)
	}
	if listed {
		reason := rotationDue(r.e.Note(k.expires), a.SecretIDTTL)
		if reason == "" {
			return r.kv(ctx, k.secret, id, true)
		}
		err = r.change("rotate", target, reason+"; the old one stays valid until it expires, one that never expires is destroyed", func() error {
			id, err = r.issueSecretID(ctx, a, k)
			return err
		})
	} else {
		err = r.change("create", target, "", func() error {
			if ok {
				// Registered by a run killed before it recorded the
				// accessor? Then keep it, unless it is due itself.
				found, err := r.adoptSecretID(ctx, a, k, id)
				if err != nil || found {
					return err
				}
			}
			id, err = r.issueSecretID(ctx, a, k)
			return err
		})
	}
	if err != nil {
		return err
	}
	return r.kv(ctx, k.secret, id, r.plan.Apply)
}

// rotationDue says why a secret ID that expires at expires (RFC 3339, as
// recorded) needs a successor under a TTL of ttl, or "" when it does not.
func rotationDue(expires string, ttl time.Duration) string {
	if expires == "" {
		return "its expiry is not recorded (issued without one by an earlier bootstrap?)"
	}
	t, err := time.Parse(time.RFC3339, expires)
	if err != nil {
		return fmt.Sprintf("its recorded expiry %q is unreadable", expires)
	}
	left := t.Sub(now())
	switch {
	case left <= 0:
		return "expired " + expires
	case left < ttl/2:
		return fmt.Sprintf("past half its %s life: expires %s", fmtDuration(ttl), expires)
	case left > ttl+time.Minute:
		// secret_id_ttl was shortened: the ID outlives what it now allows.
		return fmt.Sprintf("expires %s, later than secret_id_ttl %s allows", expires, fmtDuration(ttl))
	}
	return ""
}

// adoptSecretID looks the stored secret ID up in Vault and, when Vault has
// it and it is not due for rotation, records its accessor and expiry.
func (r *reconciler) adoptSecretID(ctx context.Context, a AppRole, k secretIDKeys, id string) (bool, error) {
	s, err := r.c.Logical().WriteWithContext(ctx, k.path+"/secret-id/lookup", map[string]any{"secret_id": id})
	if err != nil && !isNotFound(err) {
		return false, err
	}
	if s == nil || s.Data == nil {
		return false, nil
	}
	expires := ""
	if num(s.Data, "secret_id_ttl") > 0 {
		expires = str(s.Data, "expiration_time")
		if t, err := time.Parse(time.RFC3339Nano, expires); err == nil {
			expires = t.UTC().Format(time.RFC3339)
		}
	}
	if rotationDue(expires, a.SecretIDTTL) != "" {
		return false, nil
	}
	// A run killed after registering an ID may not have got to retire an
	// older one that never expires.
	acc := str(s.Data, "secret_id_accessor")
	if err := r.retireEternalSecretIDs(ctx, a.Name, k, acc); err != nil {
		return false, err
	}
	if err := r.e.SetNote(k.expires, expires); err != nil {
		return false, err
	}
	return true, r.e.SetNote(k.accessor, acc)
}

// issueSecretID makes a new secret ID: stored first, then registered with
// Vault under the role's secret_id_ttl, then its accessor and expiry are
// recorded. Secret IDs that never expire (from before the role had a TTL)
// are destroyed; older ones with a TTL stay valid until they expire, so
// whoever uses them has time to pick up the new one.
func (r *reconciler) issueSecretID(ctx context.Context, a AppRole, k secretIDKeys) (string, error) {
	// Forget the old ID's accessor before the store holds the new ID: a run
	// killed in between must look the stored ID up, not trust the record
	// of another one.
	if err := r.e.DeleteNotes(k.accessor, k.expires); err != nil {
		return "", err
	}
	id := newSecretID()
	if err := r.e.Secrets.Put(k.secret, id); err != nil {
		return "", err
	}
	crashpoint.Hit("pki/secret-id-stored")
	issued := now()
	s, err := r.c.Logical().WriteWithContext(ctx, k.path+"/custom-secret-id", map[string]any{"secret_id": id})
	if err != nil {
		return "", err
	}
	if s == nil || s.Data == nil {
		return "", errors.New("vault returned no secret id accessor")
	}
	acc := str(s.Data, "secret_id_accessor")
	crashpoint.Hit("pki/secret-id-registered")
	if err := r.retireEternalSecretIDs(ctx, a.Name, k, acc); err != nil {
		return "", err
	}
	expires := ""
	if ttl := num(s.Data, "secret_id_ttl"); ttl > 0 {
		expires = issued.Add(time.Duration(ttl) * time.Second).UTC().Format(time.RFC3339)
	}
	// The expiry first: an accessor on record always has its expiry.
	if err := r.e.SetNote(k.expires, expires); err != nil {
		return "", err
	}
	return id, r.e.SetNote(k.accessor, acc)
}

// retireEternalSecretIDs destroys the role's secret IDs, other than keep,
// that never expire: they date from before the role had a secret_id_ttl,
// and a leaked one would work forever. Only an Apply that issues or adopts
// an ID calls it, as each lookup is a write.
func (r *reconciler) retireEternalSecretIDs(ctx context.Context, name string, k secretIDKeys, keep string) error {
	s, err := r.c.Logical().ListWithContext(ctx, k.path+"/secret-id")
	if err != nil {
		return fmt.Errorf("list secret ids of approle %s: %w", name, err)
	}
	if s == nil {
		return nil
	}
	for _, acc := range strs(s.Data, "keys") {
		if acc == keep {
			continue
		}
		l, err := r.c.Logical().WriteWithContext(ctx, k.path+"/secret-id-accessor/lookup", map[string]any{"secret_id_accessor": acc})
		if isNotFound(err) || (err == nil && (l == nil || l.Data == nil)) {
			continue // expired and tidied meanwhile
		}
		if err != nil {
			return fmt.Errorf("look up a secret id of approle %s: %w", name, err)
		}
		if num(l.Data, "secret_id_ttl") > 0 {
			continue
		}
		if _, err := r.c.Logical().WriteWithContext(ctx, k.path+"/secret-id-accessor/destroy", map[string]any{"secret_id_accessor": acc}); err != nil {
			return fmt.Errorf("destroy a secret id of approle %s that never expires: %w", name, err)
		}
	}
	return nil
}

// newSecretID returns 128 random bits as text.
func newSecretID() string {
	return rand.Text()
}

func (r *reconciler) adminUser(ctx context.Context) error {
	path := "auth/" + UserpassPath + "/users/" + AdminUser
	want := fields{
		"token_policies": []string{PolicyAdmin},
		"token_ttl":      adminTokenTTL,
		"token_max_ttl":  adminTokenTTL,
	}
	pw, havePW, err := r.e.Secrets.Get(stages.SecretVaultAdminPassword)
	if err != nil {
		return err
	}
	password := func() error {
		if havePW {
			return nil
		}
		pw, _, err = r.e.Secrets.GetOrCreate(stages.SecretVaultAdminPassword, func() (string, error) { return rand.Text(), nil })
		havePW = err == nil
		return err
	}
	var got *api.Secret
	if r.authMounted(UserpassPath) {
		got, err = r.c.Logical().ReadWithContext(ctx, path)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("read vault user %s: %w", AdminUser, err)
		}
	}
	target := "vault user " + UserpassPath + "/" + AdminUser
	if got == nil {
		err = r.change("create", target, "policy "+PolicyAdmin, func() error {
			if err := password(); err != nil {
				return err
			}
			data := writeData(want)
			data["password"] = pw
			_, err := r.c.Logical().WriteWithContext(ctx, path, data)
			crashpoint.Hit("pki/admin-created")
			return err
		})
	} else {
		if diffs := differences(got.Data, want); len(diffs) > 0 {
			err = r.change("update", target, strings.Join(diffs, ", "), func() error {
				_, err := r.c.Logical().WriteWithContext(ctx, path, writeData(want))
				return err
			})
		}
		if err == nil && !havePW {
			err = r.change("update", target+" password", "no password in the secret store; set a new one", func() error {
				if err := password(); err != nil {
					return err
				}
				return r.setAdminPassword(ctx, pw)
			})
		}
	}
	if err != nil {
		return err
	}
	return r.adminToken(ctx, pw)
}

func (r *reconciler) setAdminPassword(ctx context.Context, pw string) error {
	_, err := r.c.Logical().WriteWithContext(ctx, "auth/"+UserpassPath+"/users/"+AdminUser+"/password", map[string]any{"password": pw})
	return err
}

// adminToken makes sure the secret store holds a working admin token.
func (r *reconciler) adminToken(ctx context.Context, pw string) error {
	tok, ok, err := r.e.Secrets.Get(stages.SecretVaultAdminToken)
	if err != nil {
		return err
	}
	if ok {
		valid, err := tokenValid(ctx, r.c, tok, PolicyAdmin)
		if err != nil || valid {
			return err
		}
	}
	return r.change("create", "vault admin token", "log in as "+AdminUser, func() error {
		if pw == "" {
			var err error
			if pw, _, err = r.e.Secrets.Get(stages.SecretVaultAdminPassword); err != nil {
				return err
			}
		}
		tok, err := login(ctx, r.c, pw)
		if isLoginRefused(err) {
			// The stored password is what counts; Vault's was set by a run
			// that lost it, or by hand.
			if err := r.setAdminPassword(ctx, pw); err != nil {
				return err
			}
			tok, err = login(ctx, r.c, pw)
		}
		if err != nil {
			return err
		}
		return r.e.Secrets.Put(stages.SecretVaultAdminToken, tok)
	})
}

func login(ctx context.Context, c *api.Client, pw string) (string, error) {
	lc, err := c.Clone()
	if err != nil {
		return "", err
	}
	lc.SetToken("")
	s, err := lc.Logical().WriteWithContext(ctx, "auth/"+UserpassPath+"/login/"+AdminUser, map[string]any{"password": pw})
	if err != nil {
		return "", fmt.Errorf("log in to vault as %s: %w", AdminUser, err)
	}
	if s == nil || s.Auth == nil {
		return "", errors.New("log in to vault: no token in the answer")
	}
	return s.Auth.ClientToken, nil
}

// isLoginRefused reports a wrong password or a missing user.
func isLoginRefused(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && (re.StatusCode == 400 || re.StatusCode == 403)
}

// rootToken revokes the root token once the admin identity works. The
// unseal keys can always make a new one (RegenerateRoot).
func (r *reconciler) rootToken(ctx context.Context) error {
	if !r.spec.RevokeRootToken {
		return nil
	}
	root, ok, err := r.e.Secrets.Get(stages.SecretVaultRootToken)
	if err != nil || !ok {
		return err
	}
	valid, err := tokenValid(ctx, r.c, root, "root")
	if err != nil {
		return err
	}
	if !valid {
		// Revoked by a run killed before it could record so, or by hand.
		if r.e.Note(noteRootTokenRevoked) == "true" {
			return nil
		}
		return r.change("record", "note "+noteRootTokenRevoked, "", func() error {
			return r.e.SetNote(noteRootTokenRevoked, "true")
		})
	}
	return r.change("delete", "vault root token", "the admin identity replaces it; pki.RegenerateRoot makes a new one from the unseal keys", func() error {
		admin, ok, err := r.e.Secrets.Get(stages.SecretVaultAdminToken)
		if err != nil {
			return err
		}
		if ok {
			ok, err = tokenValid(ctx, r.c, admin, PolicyAdmin)
		}
		if err != nil || !ok {
			return errors.Join(errors.New("the admin token does not work; keeping the root token"), err)
		}
		rc, err := r.c.Clone()
		if err != nil {
			return err
		}
		rc.SetToken(root)
		if err := rc.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
			return err
		}
		crashpoint.Hit("pki/root-revoked")
		return r.e.SetNote(noteRootTokenRevoked, "true")
	})
}
