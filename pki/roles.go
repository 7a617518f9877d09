package pki

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// field is one setting bootstrap manages on a Vault object: the value it
// writes and how to read the live value back for comparison.
type field struct {
	name string
	want any // bool, int, string, []string or time.Duration
}

// fields compares the live object with the wanted fields and returns one
// "name old → new" entry per difference. A nil object (missing) yields no
// differences: the caller creates it.
func diffFields(got map[string]any, want []field) []string {
	var diffs []string
	for _, f := range want {
		if d, ok := diffField(got, f); !ok {
			diffs = append(diffs, d)
		}
	}
	return diffs
}

func diffField(got map[string]any, f field) (string, bool) {
	switch w := f.want.(type) {
	case bool:
		g := boolean(got, f.name)
		return fmt.Sprintf("%s %t → %t", f.name, g, w), g == w
	case int:
		g := int(num(got, f.name))
		return fmt.Sprintf("%s %d → %d", f.name, g, w), g == w
	case string:
		g := str(got, f.name)
		return fmt.Sprintf("%s %q → %q", f.name, g, w), g == w
	case time.Duration:
		g := time.Duration(num(got, f.name)) * time.Second
		return fmt.Sprintf("%s %s → %s", f.name, fmtDuration(g), fmtDuration(w)), g == w
	case []string:
		g := strs(got, f.name)
		return fmt.Sprintf("%s [%s] → [%s]", f.name, strings.Join(g, ","), strings.Join(w, ",")), slices.Equal(g, w) || (len(g) == 0 && len(w) == 0)
	}
	panic(fmt.Sprintf("pki: field %s has unsupported type %T", f.name, f.want))
}

// writeData turns fields into a request body.
func writeData(fs []field) map[string]any {
	data := map[string]any{}
	for _, f := range fs {
		switch w := f.want.(type) {
		case time.Duration:
			data[f.name] = seconds(w)
		case []string:
			if w == nil {
				w = []string{}
			}
			data[f.name] = w
		default:
			data[f.name] = w
		}
	}
	return data
}

// object makes sure the Vault object at path has the wanted fields. parent
// says whether the engine the path lives in exists: while planning, a
// missing engine means a missing object, so nothing under it is read.
func (r *reconciler) object(ctx context.Context, kind, path string, parent bool, want []field, createDetail string) error {
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
	diffs := diffFields(got.Data, want)
	if len(diffs) == 0 {
		return nil
	}
	return r.change("update", target, strings.Join(diffs, ", "), write)
}

func roleFields(role Role) []field {
	keyUsage := role.KeyUsage
	if len(keyUsage) == 0 {
		keyUsage = defaultKeyUsage
	}
	return []field{
		{"allowed_domains", role.AllowedDomains},
		{"allow_subdomains", role.AllowSubdomains},
		{"allow_bare_domains", role.AllowBareDomains},
		{"allow_any_name", role.AllowAnyName},
		{"allow_ip_sans", role.AllowIPSANs},
		// localhost is allowed only where allowed_domains lists it, so a
		// leaf of one role can never be issued for another role's names.
		{"allow_localhost", false},
		{"allow_glob_domains", false},
		// Names that are not host names (an mDL reader's "Org A Reader")
		// need allow_any_name; everything else must be a valid host name.
		{"enforce_hostnames", !role.AllowAnyName},
		{"server_flag", role.ServerFlag},
		{"client_flag", role.ClientFlag},
		{"key_usage", keyUsage},
		{"ext_key_usage", role.ExtKeyUsage},
		{"key_type", role.KeyType},
		{"key_bits", role.KeyBits},
		{"ttl", role.TTL},
		{"max_ttl", role.MaxTTL},
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
