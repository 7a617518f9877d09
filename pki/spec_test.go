package pki

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMobileIDSpec(t *testing.T) {
	s, err := FromConfig(loadConfig(t, mobileID), "https://vault.example:8200")
	if err != nil {
		t.Fatal(err)
	}
	var mounts []string
	roles := map[string]Role{}
	for _, ca := range s.AllCAs() {
		mounts = append(mounts, ca.Mounts()...)
		for _, r := range ca.Roles {
			roles[ca.RoleMount(r)+"/roles/"+r.Name] = r
		}
	}
	wantMounts := []string{
		"consul/root-ca", "consul/inter-ca", "nomad/root-ca", "nomad/inter-ca",
		// The reader root with an intermediate per organisation.
		"mdl-reader/root-ca", "mdl-reader/inter-org-utopia-police", "mdl-reader/inter-org-utopia-bank",
		// The issuing authority: a root and no intermediate.
		"mdl-iaca/root-ca",
	}
	if !slices.Equal(mounts, wantMounts) {
		t.Errorf("mounts %q", mounts)
	}
	for _, name := range []string{"document-signer", "jws-signer", "ocsp-signer", "association"} {
		if _, ok := roles["mdl-iaca/root-ca/roles/"+name]; !ok {
			t.Errorf("the issuing authority root lacks leaf role %s", name)
		}
	}
	police := roles["mdl-reader/inter-org-utopia-police/roles/utopia-police-reader"]
	if !police.AllowAnyName || police.TTL != 720*time.Hour || police.MaxTTL != 720*time.Hour || police.KeyType != "ec" || police.KeyBits != 256 {
		t.Errorf("police reader role: %+v", police)
	}
	agent := roles["consul/inter-ca/roles/server-dc1"]
	if !slices.Equal(agent.AllowedDomains, []string{"server.dc1.consul", "localhost"}) || agent.AllowSubdomains || !agent.AllowBareDomains || agent.TTL != 24*time.Hour {
		t.Errorf("consul server role: %+v", agent)
	}
	if r := roles["nomad/inter-ca/roles/client-global"]; !slices.Equal(r.AllowedDomains, []string{"client.global.nomad", "localhost"}) {
		t.Errorf("nomad client role: %+v", r)
	}
	for _, ca := range s.CAs {
		for _, in := range ca.Intermediates {
			want := 43800 * time.Hour
			if in.Name == "org-utopia-bank" {
				want = 17520 * time.Hour
			}
			if in.TTL != want {
				t.Errorf("intermediate %s ttl %s, want %s", in.Name, in.TTL, want)
			}
		}
	}
	if !s.RevokeRootToken || s.RootTTL != 87600*time.Hour {
		t.Errorf("defaults: %+v", s)
	}
}

func TestPolicies(t *testing.T) {
	s, err := FromConfig(loadConfig(t, mobileID), "https://vault.example:8200")
	if err != nil {
		t.Fatal(err)
	}
	p := s.Policies()
	client, server := p[PolicyConsulTemplateClient], p[PolicyConsulTemplateServer]
	for _, path := range []string{"consul/inter-ca/issue/client-dc1", "nomad/inter-ca/issue/client-global"} {
		if !strings.Contains(client, `"`+path+`"`) || !strings.Contains(server, `"`+path+`"`) {
			t.Errorf("%s missing from a consul-template policy", path)
		}
	}
	for _, path := range []string{"consul/inter-ca/issue/server-dc1", "nomad/inter-ca/issue/server-global"} {
		if strings.Contains(client, path) {
			t.Errorf("the client policy allows %s", path)
		}
		if !strings.Contains(server, `"`+path+`"`) {
			t.Errorf("the server policy lacks %s", path)
		}
	}
	app := p[AppRolePolicy("django-backend")]
	if strings.Contains(app, "consul/") || strings.Contains(app, "nomad/") || !strings.Contains(app, `"mdl-iaca/root-ca/issue/document-signer"`) ||
		!strings.Contains(app, `"mdl-reader/inter-org-utopia-bank/issue/utopia-bank-reader"`) {
		t.Errorf("approle policy:\n%s", app)
	}
	if !strings.Contains(p[PolicyAdmin], `"mdl-reader/*"`) || !strings.Contains(p[PolicyAdmin], `"sys/mounts/*"`) {
		t.Errorf("admin policy:\n%s", p[PolicyAdmin])
	}
	if names := s.PolicyNames(); len(names) != len(p) {
		t.Errorf("PolicyNames %q for %d policies", names, len(p))
	}
}

func TestDifferences(t *testing.T) {
	var got map[string]any
	dec := json.NewDecoder(strings.NewReader(`{"ttl": 86400, "key_bits": 256, "allowed_domains": ["a", "b"], "server_flag": true, "key_type": "ec", "ext_key_usage": []}`))
	dec.UseNumber() // as the Vault client decodes
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	same := fields{"ttl": 24 * time.Hour, "key_bits": 256, "allowed_domains": []string{"a", "b"}, "server_flag": true, "key_type": "ec", "ext_key_usage": []string(nil)}
	if d := differences(got, same); len(d) > 0 {
		t.Errorf("equal fields differ: %q", d)
	}
	// Lists are sets: Vault keeps them in any order.
	if d := differences(got, fields{"allowed_domains": []string{"b", "a"}}); len(d) > 0 {
		t.Errorf("a reordered list differs: %q", d)
	}
	changed := fields{"ttl": 48 * time.Hour, "allowed_domains": []string{"a", "c"}, "client_flag": true, "key_type": "rsa"}
	want := []string{"allowed_domains [a,b] → [a,c]", "client_flag false → true", "key_type ec → rsa", "ttl 24h → 48h"}
	if d := differences(got, changed); !slices.Equal(d, want) {
		t.Errorf("diffs %q, want %q", d, want)
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour:    "24h",
		87600 * time.Hour: "87600h",
		90 * time.Minute:  "1h30m",
		30 * time.Minute:  "30m",
		90 * time.Second:  "1m30s",
		0:                 "0",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%s) = %q, want %q", d, got, want)
		}
	}
}
