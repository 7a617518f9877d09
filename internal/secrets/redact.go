package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Redacted replaces a secret wherever it would be printed.
const Redacted = "<redacted>"

// minLen keeps short values (a "1" key share count, "true", a JSON key
// like "keys") from being treated as secrets and mangling ordinary output.
// Every secret the tool generates is far longer.
const minLen = 8

// CredentialVars are the environment variables through which credentials
// reach Terraform, its providers and state backends, and the HashiCorp
// CLIs. bootstrap never prints them, but a failing provider or backend may
// echo them back in an error that ends up in the output.
var CredentialVars = []string{
	"DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN",
	"HCLOUD_TOKEN",
	"TF_HTTP_PASSWORD",
	"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
	"ARM_CLIENT_SECRET",
	"GOOGLE_CREDENTIALS",
	"VAULT_TOKEN", "CONSUL_HTTP_TOKEN", "NOMAD_TOKEN",
}

// EnvCredentials returns the values of the CredentialVars that are set.
func EnvCredentials() []string {
	var out []string
	for _, name := range CredentialVars {
		if v, ok := os.LookupEnv(name); ok && v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Redactor knows every secret value of a run and removes them from text.
// It is safe for concurrent use.
type Redactor struct {
	mu     sync.RWMutex
	values map[string]struct{}
	// byPrefix holds the values by their first four bytes, longest first.
	// Each value has a dozen encoded forms, so String looks up every
	// position of the text once instead of searching the text for each
	// form: the cost stays that of the text, however many secrets a
	// platform has.
	byPrefix map[uint32][]string
}

// NewRedactor returns an empty redactor.
func NewRedactor() *Redactor {
	return &Redactor{values: map[string]struct{}{}, byPrefix: map[uint32][]string{}}
}

// Add registers secret values. Each value is registered
//   - whole and line by line (a PEM key printed by a tool may be split
//     across writes, or indented);
//   - when it is JSON, string by string: Vault's init.json holds the unseal
//     keys in hex and base64 and the root token, each of which a tool may
//     print on its own;
//   - in the forms tools print values in: base64 (standard and URL, padded
//     and raw, and the part that is the same wherever the value sits in a
//     longer base64 text), hex (lower and upper case), URL query escaped,
//     JSON escaped (with and without HTML escaping) and Go quoted (%q).
//
// Values and strings shorter than 8 bytes are ignored.
func (r *Redactor) Add(values ...string) {
	var forms []string
	for _, v := range values {
		forms = appendForms(forms, v)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range forms {
		if _, ok := r.values[f]; ok || len(f) < minLen {
			continue
		}
		r.values[f] = struct{}{}
		k := prefixKey(f)
		b := r.byPrefix[k]
		i, _ := slices.BinarySearchFunc(b, len(f), func(v string, n int) int { return n - len(v) })
		r.byPrefix[k] = slices.Insert(b, i, f)
	}
}

// appendForms appends every string by which v is registered (see Add).
func appendForms(out []string, v string) []string {
	v = strings.TrimSpace(v)
	if len(v) < minLen {
		return out
	}
	out = appendEncoded(out, v)
	if strings.Contains(v, "\n") {
		for _, l := range strings.Split(v, "\n") {
			// Lines only raw: they matter where a tool splits its output,
			// and an encoder sees the whole value, not a line of it.
			if l = strings.TrimSpace(l); len(l) >= minLen {
				out = append(out, l)
			}
		}
	}
	for _, s := range jsonStrings(v) {
		out = appendForms(out, s)
	}
	return out
}

// appendEncoded appends s and its encoded forms.
func appendEncoded(out []string, s string) []string {
	b := []byte(s)
	h := hex.EncodeToString(b)
	out = append(out, s,
		base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		h, strings.ToUpper(h),
		url.QueryEscape(s),
		jsonEscape(s, true), jsonEscape(s, false),
		strings.TrimSuffix(strings.TrimPrefix(strconv.Quote(s), `"`), `"`),
	)
	// Inside a longer base64 text (a cloud-init file holding the secret,
	// say) the value starts at one of the three offsets of a 3-byte group.
	// Whatever surrounds it, the groups made only of its own bytes encode
	// the same, so for each offset those are registered: at most the two
	// bytes at either end stay, which reveal nothing.
	for off := range 3 {
		n := (len(b) - off) / 3 * 3
		out = append(out,
			base64.StdEncoding.EncodeToString(b[off:off+n]),
			base64.URLEncoding.EncodeToString(b[off:off+n]))
	}
	return out
}

// jsonEscape returns s as it appears inside a JSON string. Go's encoder
// escapes <, > and & unless told not to; other encoders do not.
func jsonEscape(s string, html bool) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(html)
	if err := enc.Encode(s); err != nil {
		return s // cannot happen for a string
	}
	q := strings.TrimSuffix(buf.String(), "\n")
	return q[1 : len(q)-1]
}

// jsonStrings returns the string values (not the keys) in v when v is a
// JSON object or array, and nothing otherwise.
func jsonStrings(v string) []string {
	if v == "" || (v[0] != '{' && v[0] != '[') {
		return nil
	}
	var doc any
	if err := json.Unmarshal([]byte(v), &doc); err != nil {
		return nil
	}
	var out []string
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case string:
			out = append(out, x)
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for k, e := range x {
				if !metadataKeys[k] {
					walk(e)
				}
			}
		}
	}
	walk(doc)
	return out
}

// metadataKeys name the fields of bootstrap's secret files that describe a
// secret rather than hold one (Vault's init.json records the node it was
// initialised on and when): redacting "server-1" everywhere would hide
// which node a message is about.
var metadataKeys = map[string]bool{"node": true, "time": true, "pgp_encrypted": true}

// prefixKey is the index key of a string of at least four bytes.
func prefixKey(s string) uint32 {
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

// String returns s with every known secret replaced by Redacted. Secrets
// that overlap in s are replaced as one, so neither leaves a piece behind.
func (r *Redactor) String(s string) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.values) == 0 {
		return s
	}
	var out strings.Builder
	done := 0 // s[:done] is in out
	for i := 0; i+minLen <= len(s); {
		end := r.matchAt(s, i)
		if end < 0 {
			i++
			continue
		}
		for j := i + 1; j < end; j++ {
			if e := r.matchAt(s, j); e > end {
				end = e
			}
		}
		out.WriteString(s[done:i])
		out.WriteString(Redacted)
		done, i = end, end
	}
	if done == 0 {
		return s
	}
	out.WriteString(s[done:])
	return out.String()
}

// matchAt returns the end of the longest secret that starts at s[i], or -1.
func (r *Redactor) matchAt(s string, i int) int {
	if len(s)-i < minLen {
		return -1
	}
	for _, v := range r.byPrefix[prefixKey(s[i:])] {
		if strings.HasPrefix(s[i:], v) {
			return i + len(v)
		}
	}
	return -1
}

// Writer returns a writer that redacts whole lines before passing them on to
// w. Text is held until a newline (or Close) so a secret split across two
// Write calls is still caught.
func (r *Redactor) Writer(w io.Writer) *LineWriter {
	return &LineWriter{r: r, w: w}
}

// LineWriter is the redacting writer returned by Redactor.Writer.
type LineWriter struct {
	mu  sync.Mutex
	r   *Redactor
	w   io.Writer
	buf []byte
}

func (lw *LineWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.buf = append(lw.buf, p...)
	i := bytes.LastIndexByte(lw.buf, '\n')
	if i < 0 {
		return len(p), nil
	}
	out := lw.r.String(string(lw.buf[:i+1]))
	rest := copy(lw.buf, lw.buf[i+1:])
	lw.buf = lw.buf[:rest]
	if _, err := io.WriteString(lw.w, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close writes out whatever is left without a trailing newline.
func (lw *LineWriter) Close() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if len(lw.buf) == 0 {
		return nil
	}
	out := lw.r.String(string(lw.buf))
	lw.buf = lw.buf[:0]
	_, err := io.WriteString(lw.w, out)
	return err
}
