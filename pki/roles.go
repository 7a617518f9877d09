package pki

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
)

// fields are the settings bootstrap manages on a Vault object, by name:
// bool, int, string, []string or time.Duration values.
type fields map[string]any

// differences compares the live object with the wanted fields and returns
// one "name have → want" entry per difference. The live values are read as
// the wanted type, as Vault may return them in another: durations as
// seconds (compared and shown as "24h"), an empty list or false as nothing.
func differences(have map[string]any, want fields) []string {
	h, w := map[string]any{}, map[string]any{}
	for k, v := range want {
		switch v := v.(type) {
		case time.Duration:
			h[k], w[k] = fmtDuration(time.Duration(num(have, k))*time.Second), fmtDuration(v)
		case []string:
			h[k], w[k] = strs(have, k), v
		case bool:
			h[k], w[k] = boolean(have, k), v
		case int:
			h[k], w[k] = num(have, k), v
		default:
			h[k], w[k] = have[k], v
		}
	}
	return reconcile.Differences(h, w)
}

// writeData turns fields into a request body.
func writeData(fs fields) map[string]any {
	data := map[string]any{}
	for k, v := range fs {
		switch w := v.(type) {
		case time.Duration:
			data[k] = seconds(w)
		case []string:
			if w == nil {
				w = []string{}
			}
			data[k] = w
		default:
			data[k] = w
		}
	}
	return data
}

// object makes sure the Vault object at path has the wanted fields. parent
// says whether the engine the path lives in exists: while planning, a
// missing engine means a missing object, so nothing under it is read.
func (r *reconciler) object(ctx context.Context, kind, path string, parent bool, want fields, createDetail string) error {
	target := "vault " + kind + " " + path
	var got *api.Secret
	if parent {
		var err error
		got, err = r.c.Logical().ReadWithContext(ctx, path)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("read %s: %w", path, err)
		}
	}
	write := func() error {
		_, err := r.c.Logical().WriteWithContext(ctx, path, writeData(want))
		return err
	}
	if got == nil || got.Data == nil {
		return r.change("create", target, createDetail, write)
	}
	diffs := differences(got.Data, want)
	if len(diffs) == 0 {
		return nil
	}
	return r.change("update", target, strings.Join(diffs, ", "), write)
}

func roleFields(role Role) fields {
	keyUsage := role.KeyUsage
	if len(keyUsage) == 0 {
		keyUsage = defaultKeyUsage
	}
	return fields{
		"allowed_domains":    role.AllowedDomains,
		"allow_subdomains":   role.AllowSubdomains,
		"allow_bare_domains": role.AllowBareDomains,
		"allow_any_name":     role.AllowAnyName,
		"allow_ip_sans":      role.AllowIPSANs,
		// localhost is allowed only where allowed_domains lists it, so a
		// leaf of one role can never be issued for another role's names.
		"allow_localhost":    false,
		"allow_glob_domains": false,
		// Names that are not host names (an mDL reader's "Org A Reader")
		// need allow_any_name; everything else must be a valid host name.
		"enforce_hostnames": !role.AllowAnyName,
		"server_flag":       role.ServerFlag,
		"client_flag":       role.ClientFlag,
		"key_usage":         keyUsage,
		"ext_key_usage":     role.ExtKeyUsage,
		"key_type":          role.KeyType,
		"key_bits":          role.KeyBits,
		"ttl":               role.TTL,
		"max_ttl":           role.MaxTTL,
	}
}

func (r *reconciler) role(ctx context.Context, mount string, role Role) error {
	return r.object(ctx, "role", mount+"/roles/"+role.Name, r.mounted(mount), roleFields(role), roleSummary(role))
}

func roleSummary(role Role) string {
	names := strings.Join(role.AllowedDomains, ",")
	if role.AllowAnyName {
		names = "any name"
	}
	return fmt.Sprintf("%s, %s, ttl %s", names, keyDesc(role.KeyType, role.KeyBits), fmtDuration(role.TTL))
}

// Accessors for the loosely typed data of Vault responses.

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func boolean(m map[string]any, k string) bool {
	b, _ := m[k].(bool)
	return b
}

func num(m map[string]any, k string) int64 {
	switch v := m[k].(type) {
	case interface{ Int64() (int64, error) }: // json.Number
		n, _ := v.Int64()
		return n
	case float64:
		return int64(v)
	case int:
		return int64(v)
	case int64:
		return v
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}

func strs(m map[string]any, k string) []string {
	switch v := m[k].(type) {
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case []string:
		return v
	case string:
		if v == "" {
			return nil
		}
		return strings.Split(v, ",")
	}
	return nil
}
