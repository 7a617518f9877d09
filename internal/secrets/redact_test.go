package secrets_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/secrets"
)

const pemKey = `-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDqk7t5dG1lc3RrZXlfZm9yX3JlZGFjdGlvbl90ZXN0cwAAAJhkZWFkYmVl
ZmRlYWRiZWVmAAAAC3NzaC1lZDI1NTE5AAAAIOqTu3l0bWVzdGtleV9mb3JfcmVkYWN0aW
-----END OPENSSH PRIVATE KEY-----
`

func TestRedactorString(t *testing.T) {
	r := secrets.NewRedactor()
	r.Add("hvs.CAESIJ2k3mZ9", "short", "", "  padded-secret-value  ")
	for in, want := range map[string]string{
		"token hvs.CAESIJ2k3mZ9 used":              "token <redacted> used",
		"hvs.CAESIJ2k3mZ9hvs.CAESIJ2k3mZ9":         "<redacted><redacted>",
		"a short value stays":                      "a short value stays", // below the minimum length
		"x=padded-secret-value;":                   "x=<redacted>;",
		"nothing secret here":                      "nothing secret here",
		"prefix hvs.CAESIJ2k3mZ and not the whole": "prefix hvs.CAESIJ2k3mZ and not the whole",
	} {
		if got := r.String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
	var nilRed *secrets.Redactor
	if got := nilRed.String("x hvs.CAESIJ2k3mZ9"); got != "x hvs.CAESIJ2k3mZ9" {
		t.Errorf("nil redactor changed the text: %q", got)
	}
}

// A secret that contains another is removed whole, not as a redacted
// prefix followed by its tail.
func TestRedactorLongestFirst(t *testing.T) {
	r := secrets.NewRedactor()
	// Added shortest first on purpose.
	r.Add("abcdefgh", "abcdefgh-ijkl", "abcdefgh-ijkl-mnop")
	for in, want := range map[string]string{
		"k=abcdefgh-ijkl-mnop": "k=<redacted>",
		"k=abcdefgh-ijkl":      "k=<redacted>",
		"k=abcdefgh-ijkl-xx":   "k=<redacted>-xx",
		"k=abcdefgh!":          "k=<redacted>!",
	} {
		if got := r.String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactorMultiLinePEM(t *testing.T) {
	r := secrets.NewRedactor()
	r.Add(pemKey)
	if got := r.String("key:\n" + pemKey + "done"); strings.Contains(got, "b3BlbnNzaC1rZXkt") || !strings.HasSuffix(got, "done") {
		t.Errorf("whole PEM not redacted:\n%s", got)
	}
	// A tool that prints the key indented, or one line of it, leaks nothing.
	var indented strings.Builder
	for _, l := range strings.Split(pemKey, "\n") {
		indented.WriteString("    " + l + "\n")
	}
	got := r.String(indented.String())
	for _, l := range strings.Split(strings.TrimSpace(pemKey), "\n")[1:4] {
		if strings.Contains(got, l) {
			t.Errorf("line %q of the key leaked:\n%s", l, got)
		}
	}
	// Redacted through a writer that gets the key in odd pieces.
	var out bytes.Buffer
	w := r.Writer(&out)
	src := "ansible: " + pemKey + "ok\n"
	for i := 0; i < len(src); i += 7 {
		w.Write([]byte(src[i:min(i+7, len(src))]))
	}
	w.Close()
	for _, l := range strings.Split(strings.TrimSpace(pemKey), "\n") {
		if strings.Contains(out.String(), l) && len(l) >= 8 && !strings.HasPrefix(l, "-----") {
			t.Errorf("line %q leaked through the writer:\n%s", l, out.String())
		}
	}
	if !strings.HasSuffix(out.String(), "ok\n") {
		t.Errorf("writer lost the text after the key: %q", out.String())
	}
}

// A secret split across two Write calls is still caught: the writer holds
// text back until the end of the line.
func TestLineWriterSplitWrites(t *testing.T) {
	r := secrets.NewRedactor()
	const secret = "s.9f86d081884c7d659a2feaa0"
	r.Add(secret)
	var out bytes.Buffer
	w := r.Writer(&out)
	for _, part := range []string{"login s.9f86d0", "81884c7d", "659a2feaa0 ok\nnext ", "line s.9f86d081884c7d659a2feaa0"} {
		n, err := w.Write([]byte(part))
		if err != nil || n != len(part) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if strings.Contains(out.String(), "s.9f86") {
			t.Fatalf("a partial secret reached the output: %q", out.String())
		}
	}
	if got := out.String(); got != "login <redacted> ok\n" {
		t.Errorf("before Close: %q", got)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "login <redacted> ok\nnext line <redacted>" {
		t.Errorf("after Close: %q", got)
	}
	if err := w.Close(); err != nil || out.String() != "login <redacted> ok\nnext line <redacted>" {
		t.Errorf("second Close wrote again: %q, %v", out.String(), err)
	}
}

// Secrets registered after the writer was made are redacted too: stages
// generate secrets in the middle of a run.
func TestLineWriterLateSecret(t *testing.T) {
	r := secrets.NewRedactor()
	var out bytes.Buffer
	w := r.Writer(&out)
	w.Write([]byte("before\n"))
	r.Add("late-generated-token")
	w.Write([]byte("token late-generated-token\n"))
	if got := out.String(); got != "before\ntoken <redacted>\n" {
		t.Errorf("output = %q", got)
	}
}

func TestLineWriterConcurrent(t *testing.T) {
	r := secrets.NewRedactor()
	r.Add("concurrent-secret-1")
	var out bytes.Buffer
	w := r.Writer(&out)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				fmt.Fprintf(w, "goroutine %d line %d concurrent-secret-1\n", i, j)
				r.Add(fmt.Sprintf("added-while-writing-%d-%d", i, j))
			}
		}()
	}
	wg.Wait()
	w.Close()
	if strings.Contains(out.String(), "concurrent-secret-1") || strings.Count(out.String(), "\n") != 400 {
		t.Errorf("concurrent writes: %d lines, secret present: %v", strings.Count(out.String(), "\n"), strings.Contains(out.String(), "concurrent-secret-1"))
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestLineWriterError(t *testing.T) {
	w := secrets.NewRedactor().Writer(failWriter{})
	if _, err := w.Write([]byte("a line\n")); err == nil {
		t.Error("the underlying writer's error was lost")
	}
}

// vaultInit is the shape of Vault's init response as the vault stage stores
// it in vault/init.json.
var vaultInit = map[string]any{
	"keys":                 []string{"6d3f1c2b8e9a4f7d0c5b2a1e3f4d6c8b9a0e1f2d3c4b5a6978", "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829"},
	"keys_base64":          []string{"bT8cK46aT30MWyoePz1si5oOHy08S1ppeA==", "obLD1OX2BxgpOktcbX6PkKGyw9Tl9gcYKQ=="},
	"recovery_keys":        []string{},
	"recovery_keys_base64": []string{},
	"root_token":           "hvs.AbCdEfGhIjKlMnOpQrStUvWx",
	"secret_shares":        5,
	"secret_threshold":     3,
	"type":                 "shamir",
}

// Every string in a JSON secret is a secret on its own: a tool printing one
// unseal key, or the root token, prints none of them.
func TestRedactorJSONValues(t *testing.T) {
	b, err := json.MarshalIndent(vaultInit, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	r := secrets.NewRedactor()
	r.Add(string(b))
	for _, v := range []string{
		"6d3f1c2b8e9a4f7d0c5b2a1e3f4d6c8b9a0e1f2d3c4b5a6978", "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829",
		"bT8cK46aT30MWyoePz1si5oOHy08S1ppeA==", "obLD1OX2BxgpOktcbX6PkKGyw9Tl9gcYKQ==",
		"hvs.AbCdEfGhIjKlMnOpQrStUvWx",
	} {
		if got := r.String("unseal " + v + " done"); got != "unseal <redacted> done" {
			t.Errorf("JSON value %s: %q", v, got)
		}
	}
	// Keys, numbers and short strings are not secrets: output that merely
	// mentions them is left alone.
	for _, s := range []string{"keys_base64 is missing", "root_token", "secret_shares = 5", "seal type shamir"} {
		if got := r.String(s); got != s {
			t.Errorf("String(%q) = %q", s, got)
		}
	}
	// The file printed whole, compact or indented, leaks nothing either.
	compact, _ := json.Marshal(vaultInit)
	for _, out := range []string{r.String(string(b)), r.String(string(compact))} {
		if strings.Contains(out, "hvs.") || strings.Contains(out, "6d3f1c2b") || strings.Contains(out, "bT8cK46a") {
			t.Errorf("init.json leaked:\n%s", out)
		}
	}
	// Not JSON after all: registered as it is.
	r.Add("{not json but a secret}")
	if got := r.String("x {not json but a secret}"); got != "x <redacted>" {
		t.Errorf("invalid JSON value: %q", got)
	}
}

// A secret in a JSON file stored in the secret store (Vault's init.json) is
// registered value by value when it is stored and when the store is opened.
func TestStoreRegistersJSONValues(t *testing.T) {
	b, _ := json.MarshalIndent(vaultInit, "", "  ")
	dir := t.TempDir()
	s, err := secrets.Open(dir, secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("vault/init.json", string(b)); err != nil {
		t.Fatal(err)
	}
	const key = "obLD1OX2BxgpOktcbX6PkKGyw9Tl9gcYKQ=="
	if got := s.Redactor().String("key " + key); got != "key <redacted>" {
		t.Errorf("after Put: %q", got)
	}
	reopened, err := secrets.Open(dir, secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	if got := reopened.Redactor().String("key " + key); got != "key <redacted>" {
		t.Errorf("after Open: %q", got)
	}
}

// A secret printed encoded — by a tool that base64s a config file, hexdumps
// a key, builds a URL or writes JSON — is redacted in that form too.
func TestRedactorEncodedForms(t *testing.T) {
	const secret = `pa"ss\word<&>` + "\n" + `line-two?x=1`
	r := secrets.NewRedactor()
	r.Add(secret)
	jsonHTML, _ := json.Marshal(secret) // escapes <, > and &
	var plain bytes.Buffer
	enc := json.NewEncoder(&plain)
	enc.SetEscapeHTML(false)
	enc.Encode(secret)
	b := []byte(secret)
	for name, form := range map[string]string{
		"base64 std":         base64.StdEncoding.EncodeToString(b),
		"base64 std raw":     base64.RawStdEncoding.EncodeToString(b),
		"base64 url":         base64.URLEncoding.EncodeToString(b),
		"base64 url raw":     base64.RawURLEncoding.EncodeToString(b),
		"hex":                hex.EncodeToString(b),
		"hex upper":          strings.ToUpper(hex.EncodeToString(b)),
		"query escaped":      url.QueryEscape(secret),
		"JSON escaped":       strings.Trim(string(jsonHTML), `"`),
		"JSON escaped plain": strings.Trim(strings.TrimSpace(plain.String()), `"`),
		"Go quoted":          strings.Trim(strconv.Quote(secret), `"`),
	} {
		if got := r.String("[" + form + "]"); got != "[<redacted>]" {
			t.Errorf("%s %q: %q", name, form, got)
		}
	}
	// The escaped forms are what the task is about: make sure they differ
	// from the raw value, or the test proves nothing.
	if s := strings.Trim(string(jsonHTML), `"`); !strings.Contains(s, `\"`) || !strings.Contains(s, `\\`) || !strings.Contains(s, `\n`) || !strings.Contains(s, `\u003c`) {
		t.Fatalf("JSON form %s lacks the escapes under test", s)
	}

	// Forms of a plain token, the common case.
	const token = "hvs.CAESIJ2k3mZ9qWx"
	r.Add(token)
	for _, form := range []string{
		base64.StdEncoding.EncodeToString([]byte(token)),
		base64.RawURLEncoding.EncodeToString([]byte(token)),
		hex.EncodeToString([]byte(token)),
		strings.ToUpper(hex.EncodeToString([]byte(token))),
	} {
		if got := r.String("Authorization: Basic " + form); got != "Authorization: Basic <redacted>" {
			t.Errorf("%s: %q", form, got)
		}
	}
}

// A secret inside a longer base64 text (user data holding a gossip key,
// say) starts at any offset of a 3-byte group; the part encoded from its
// own bytes alone is redacted whatever the offset.
func TestRedactorBase64Embedded(t *testing.T) {
	const secret = "gossip-key-Zm9vYmFyYmF6cXV4"
	r := secrets.NewRedactor()
	r.Add(secret)
	for _, prefix := range []string{"", "k", "ke", "key", "encrypt = \"", "encrypt = \"x"} {
		for _, suffix := range []string{"", "\"", "\"\n}\n"} {
			for _, e := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
				full := e.EncodeToString([]byte(prefix + secret + suffix))
				got := r.String(full)
				head, tail, ok := strings.Cut(got, secrets.Redacted)
				if !ok {
					t.Errorf("%q+secret+%q: not redacted: %s", prefix, suffix, got)
					continue
				}
				// At most the group holding the secret's first bytes and
				// the one holding its last bytes remain.
				if maxHead := (len(prefix)/3 + 1) * 4; len(head) > maxHead {
					t.Errorf("%q+secret+%q: %d characters before the redaction, want at most %d: %s", prefix, suffix, len(head), maxHead, got)
				}
				if maxTail := (len(suffix)/3 + 2) * 4; len(tail) > maxTail {
					t.Errorf("%q+secret+%q: %d characters after the redaction, want at most %d: %s", prefix, suffix, len(tail), maxTail, got)
				}
			}
		}
	}
}

// Short strings are never secrets, in any form: redacting them would
// mangle ordinary words.
func TestRedactorMinimumLength(t *testing.T) {
	r := secrets.NewRedactor()
	r.Add("shamir", "abc1234", `{"a": "short", "n": 12345678}`, `["tiny"]`)
	for _, s := range []string{"shamir", "abc1234", base64.StdEncoding.EncodeToString([]byte("abc1234")), "short", "12345678", "tiny"} {
		if got := r.String("x " + s + " y"); got != "x "+s+" y" {
			t.Errorf("short value %q redacted: %q", s, got)
		}
	}
	r.Add("abcd1234") // 8 bytes: the shortest secret
	if got := r.String("x abcd1234 y"); got != "x <redacted> y" {
		t.Errorf("8-byte secret: %q", got)
	}
}

// Two secrets that overlap in the text are removed as one: neither leaves
// its own piece behind.
func TestRedactorOverlapping(t *testing.T) {
	r := secrets.NewRedactor()
	r.Add("xxabcdefgh", "abcdefgh-ijkl")
	for in, want := range map[string]string{
		"k=xxabcdefgh-ijkl;":       "k=<redacted>;",
		"k=xxabcdefgh;abcdefgh-ij": "k=<redacted>;abcdefgh-ij",
		"xxabcdefghabcdefgh-ijkl":  "<redacted><redacted>",
	} {
		if got := r.String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

// Cloud credentials in the environment are known to the redactor before a
// provider gets the chance to echo them.
func TestEnvCredentials(t *testing.T) {
	for _, name := range secrets.CredentialVars {
		t.Setenv(name, "")
	}
	const gcpKey = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDu\n-----END PRIVATE KEY-----\n"
	creds, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"private_key_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
		"private_key":    gcpKey,
	})
	t.Setenv("DIGITALOCEAN_TOKEN", "dop_v1_0123456789abcdef0123456789abcdef")
	t.Setenv("HCLOUD_TOKEN", "hcloud-token-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH")
	t.Setenv("TF_HTTP_PASSWORD", "glpat-backend-pass")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	t.Setenv("GOOGLE_CREDENTIALS", string(creds))
	r := secrets.NewRedactor()
	r.Add(secrets.EnvCredentials()...)
	for _, leak := range []string{
		"dop_v1_0123456789abcdef0123456789abcdef",
		"hcloud-token-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH",
		"glpat-backend-pass",
		"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		"0a1b2c3d4e5f60718293a4b5c6d7e8f9",
		"VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDu", // one line of the key
		base64.StdEncoding.EncodeToString([]byte("glpat-backend-pass")),
	} {
		if got := r.String("Error: 401 for " + leak); got != "Error: 401 for <redacted>" {
			t.Errorf("%s: %q", leak, got)
		}
	}
	if got := r.String(gcpKey); strings.Contains(got, "MIIEvQIBADAN") {
		t.Errorf("the service account key leaked:\n%s", got)
	}
	if n := len(secrets.EnvCredentials()); n != 5 {
		t.Errorf("%d credentials, want the 5 set", n)
	}
}

// The metadata next to the secrets of a JSON secret file stays readable.
func TestRedactorJSONMetadata(t *testing.T) {
	r := secrets.NewRedactor()
	r.Add(`{"keys_base64": ["c2VjcmV0LXNoYXJlLW9uZQ=="], "root_token": "hvs.rootrootroot", "node": "server-1", "time": "2026-12-03T19:00:00Z"}`)
	got := r.String("vault on server-1 since 2026-12-03T19:00:00Z, root hvs.rootrootroot")
	if !strings.Contains(got, "server-1") || !strings.Contains(got, "2026-12-03T19:00:00Z") || strings.Contains(got, "hvs.rootrootroot") {
		t.Errorf("got %q", got)
	}
}
