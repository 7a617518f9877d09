package terraform

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
)

// stateServer speaks the protocol of Terraform's http backend the way
// GitLab's managed Terraform state does: GET/POST/DELETE on the state, POST
// and DELETE on <state>/lock, basic auth. It is a test double for the
// remote state store, not for any platform component; Terraform itself is
// real.
type stateServer struct {
	URL      string
	password string

	mu         sync.Mutex
	state      []byte
	lock       []byte
	locks      int
	unlocks    int
	badAuth    int
	dropWrites bool // acknowledge state writes but keep the old state
}

func newStateServer(t *testing.T, password string) *stateServer {
	t.Helper()
	ln, err := net.Listen("tcp", testcluster.NewSubnet(t).IP(1)+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stateServer{URL: "http://" + ln.Addr().String() + "/state/platform", password: password}
	srv := &http.Server{Handler: s}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *stateServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if user, pass, ok := r.BasicAuth(); !ok || user != "bootstrap" || pass != s.password {
		s.badAuth++
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	body, _ := io.ReadAll(r.Body)
	switch {
	case r.URL.Path == "/state/platform/lock" && r.Method == http.MethodPost:
		if s.lock != nil {
			w.WriteHeader(http.StatusLocked)
			w.Write(s.lock)
			return
		}
		s.lock = body
		s.locks++
	case r.URL.Path == "/state/platform/lock" && r.Method == http.MethodDelete:
		s.lock = nil
		s.unlocks++
	case r.URL.Path == "/state/platform" && r.Method == http.MethodGet:
		if s.state == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Write(s.state)
	case r.URL.Path == "/state/platform" && r.Method == http.MethodPost:
		if !s.dropWrites {
			s.state = body
		}
	case r.URL.Path == "/state/platform" && r.Method == http.MethodDelete:
		s.state = nil
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// resources lists the managed resources of the stored state.
func (s *stateServer) resources(t *testing.T) []string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == nil {
		return nil
	}
	var st struct {
		Resources []struct {
			Mode, Type, Name string
			Instances        []json.RawMessage
		}
	}
	if err := json.Unmarshal(s.state, &st); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range st.Resources {
		if r.Mode == "managed" && len(r.Instances) > 0 {
			out = append(out, r.Type+"."+r.Name)
		}
	}
	return out
}

func (s *stateServer) set(f func(s *stateServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func httpBackend(s *stateServer) map[string]string {
	return map[string]string{
		"address":        s.URL,
		"lock_address":   s.URL + "/lock",
		"unlock_address": s.URL + "/lock",
		"lock_method":    "POST",
		"unlock_method":  "DELETE",
		"username":       "bootstrap",
		"retry_max":      "0",
	}
}

// TestRemoteStateAndCredentials runs a module against a GitLab-style http
// state backend with credentials only in the environment: the backend
// password and a cloud token both reach Terraform, and neither lands in any
// file of the working directory nor in the output.
func TestRemoteStateAndCredentials(t *testing.T) {
	needTerraform(t)
	ctx := ctxFor(t)
	token, password := randomSecret(t), randomSecret(t)
	t.Setenv("DIGITALOCEAN_TOKEN", token)
	t.Setenv("TF_HTTP_PASSWORD", password)
	srv := newStateServer(t, password)

	probe := filepath.Join(t.TempDir(), "probe")
	prefix := randomPrefix(t)
	cfg, configDir := testModule(t, "env-probe", map[string]cty.Value{
		"probe_file":     cty.StringVal(probe),
		"address_prefix": cty.StringVal(prefix),
	})
	cfg.Backend = "http"
	cfg.BackendConfig = httpBackend(srv)
	workDir := t.TempDir()
	r, log := newRunner(t, cfg, configDir, workDir)

	inv, err := r.Apply(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := inv.Node("server-1"); !ok || n.PrivateIP != prefix+".1" || !n.Has("vault") {
		t.Fatalf("inventory: %+v", inv.Nodes)
	}
	// The token reached Terraform's environment ...
	b, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != sha256hex(token) {
		t.Fatalf("the module saw DIGITALOCEAN_TOKEN with sha256 %s, want %s", got, sha256hex(token))
	}
	// ... the password reached the backend, the state is there and not here,
	// and the lock was taken and given back.
	srv.set(func(s *stateServer) {
		if s.badAuth != 0 || s.locks == 0 || s.locks != s.unlocks || s.lock != nil {
			t.Errorf("backend: %d bad logins, %d locks, %d unlocks, held=%v", s.badAuth, s.locks, s.unlocks, s.lock != nil)
		}
	})
	if got := srv.resources(t); !slices.Equal(got, []string{"terraform_data.probe"}) {
		t.Fatalf("remote state holds %v", got)
	}
	if _, err := os.Stat(filepath.Join(workDir, "terraform.tfstate")); err == nil {
		t.Fatal("a local state file exists next to the remote backend")
	}

	// Someone else holds the lock: plan still works (it takes none), apply
	// fails and says what to do.
	srv.set(func(s *stateServer) { s.lock = []byte(`{"ID":"other-run","Who":"ci@runner"}`) })
	r2, log2 := newRunner(t, cfg, configDir, workDir)
	changes, err := r2.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 0 {
		t.Fatalf("plan: %v", changes)
	}
	r2.lockTimeout = "1s"
	if _, err := r2.Apply(ctx); err == nil || !strings.Contains(err.Error(), "force-unlock") {
		t.Fatalf("apply under someone else's lock: %v", err)
	}
	srv.set(func(s *stateServer) { s.lock = nil })

	n := grepTree(t, workDir, token) + grepTree(t, workDir, password)
	if n < 10 {
		t.Fatalf("only %d files checked; is the working directory in use?", n)
	}
	for _, out := range []string{log.String(), log2.String()} {
		if strings.Contains(out, token) || strings.Contains(out, password) {
			t.Fatal("a credential appears in Terraform's output")
		}
	}

	if err := r2.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if got := srv.resources(t); len(got) != 0 {
		t.Fatalf("remote state after destroy holds %v", got)
	}
}

// TestDestroyChecksNothingIsLeft makes the backend lose the state written by
// destroy (as a misbehaving or eventually consistent store would): Terraform
// reports success, and Destroy must still fail, naming what is left.
func TestDestroyChecksNothingIsLeft(t *testing.T) {
	needTerraform(t)
	ctx := ctxFor(t)
	t.Setenv("TF_HTTP_PASSWORD", "test-password")
	srv := newStateServer(t, "test-password")
	cfg, configDir := testModule(t, "env-probe", map[string]cty.Value{
		"probe_file":     cty.StringVal(filepath.Join(t.TempDir(), "probe")),
		"address_prefix": cty.StringVal(randomPrefix(t)),
	})
	cfg.Backend = "http"
	cfg.BackendConfig = httpBackend(srv)
	r, _ := newRunner(t, cfg, configDir, t.TempDir())
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}

	srv.set(func(s *stateServer) { s.dropWrites = true })
	err := r.Destroy(ctx)
	if err == nil {
		t.Fatal("Destroy succeeded although the state still holds terraform_data.probe")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "1 resource(s) are still in the state") || !strings.Contains(err.Error(), "terraform_data.probe") {
		t.Fatalf("unclear error: %v", err)
	}

	srv.set(func(s *stateServer) { s.dropWrites = false })
	if err := r.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
}
