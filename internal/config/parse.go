package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// Defaults returns a platform with every default set and no provider.
func Defaults() *Platform {
	return &Platform{
		Name:       "platform",
		Datacenter: "dc1",
		Region:     "global",
		Vault:      Vault{KeyShares: 5, KeyThreshold: 3},
		PKI: PKI{
			RootTTL:         "87600h",
			IntermediateTTL: "43800h",
			LeafTTL:         "24h",
			RevokeRootToken: true,
		},
		Consul: Consul{Domain: "consul", UI: true, DNS: true},
		Nomad:  Nomad{Namespaces: []string{"dev", "prod"}, DrainDeadline: "5m"},
		Jobs: Jobs{
			Driver:       "auto",
			Fabio:        Job{Enabled: true, CPU: 100, Memory: 128},
			Prometheus:   Job{Enabled: true, Count: 1, CPU: 300, Memory: 512},
			Alertmanager: Job{Enabled: true, Count: 1, CPU: 100, Memory: 128},
			Grafana:      Job{Enabled: true, Count: 1, CPU: 200, Memory: 384},
			NodeExporter: Job{Enabled: true, CPU: 50, Memory: 64},
		},
		Monitoring: Monitoring{Retention: "15d", ScrapeInterval: "15s"},
	}
}

func defaultLocal() LocalProvider {
	return LocalProvider{Servers: 3, Clients: 2, Subnet: "127.0.1.0/24"}
}

// Load reads and validates a platform file. The returned diagnostics carry
// file:line:column; on error the platform is nil.
func Load(filename string) (*Platform, hcl.Diagnostics) {
	src, err := os.ReadFile(filename)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read configuration file",
			Detail:   fmt.Sprintf("%s. Create it (a file with only `provider \"local\" {}` is a complete platform) or pass -c FILE.", err),
		}}
	}
	return Parse(filename, src)
}

// Parse parses platform.hcl source. filename is used in diagnostics and to
// resolve relative paths.
func Parse(filename string, src []byte) (*Platform, hcl.Diagnostics) {
	f, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, diags
	}
	dir, err := filepath.Abs(filepath.Dir(filename))
	if err != nil {
		dir = filepath.Dir(filename)
	}
	p := Defaults()
	p.Filename = filename
	p.Dir = dir
	in := &secretInputs{exprs: secretExprs(f.Body)}
	ctx := evalContext(dir, filepath.Dir(filename), in)

	// The value checks run on what did decode, so a file with a wrong type
	// and an even server count shows both at once, not one per run. A
	// setting that failed to decode keeps its default, which the checks
	// accept.
	diags = dropFollowOns(append(diags, decodeTop(f.Body, ctx, p)...))
	diags = in.scrub(append(diags, besides(diags, validate(p, in))...))
	if diags.HasErrors() {
		return nil, diags
	}
	p.Secrets = in.values
	return p, diags
}

var topSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "name"}, {Name: "datacenter"}, {Name: "region"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "provider", LabelNames: []string{"type"}},
		{Type: "vault"}, {Type: "pki"}, {Type: "consul"}, {Type: "nomad"},
		{Type: "jobs"}, {Type: "monitoring"}, {Type: "gitlab_runner"}, {Type: "ingress"}, {Type: "docker"},
	},
}

func decodeTop(body hcl.Body, ctx *hcl.EvalContext, p *Platform) hcl.Diagnostics {
	content, diags := body.Content(topSchema)
	for name, attr := range content.Attributes {
		var dst *string
		switch name {
		case "name":
			dst = &p.Name
		case "datacenter":
			dst = &p.Datacenter
		case "region":
			dst = &p.Region
		}
		diags = append(diags, gohcl.DecodeExpression(attr.Expr, ctx, dst)...)
		if *dst == "" || !validName(*dst) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid " + name,
				Detail:   fmt.Sprintf("%s must be lowercase letters, digits and dashes, starting with a letter (e.g. %q).", name, map[string]string{"name": "platform", "datacenter": "dc1", "region": "global"}[name]),
				Subject:  attr.Expr.Range().Ptr(),
			})
		}
	}

	seen := map[string]*hcl.Block{}
	for _, b := range content.Blocks {
		key := b.Type
		if prev, ok := seen[key]; ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Duplicate %s block", b.Type),
				Detail:   fmt.Sprintf("Only one %s block is allowed; the first one is at %s. Merge the two.", b.Type, prev.DefRange),
				Subject:  b.DefRange.Ptr(),
			})
			continue
		}
		seen[key] = b
		switch b.Type {
		case "provider":
			diags = append(diags, decodeProvider(b, ctx, p)...)
		case "vault":
			diags = append(diags, gohcl.DecodeBody(b.Body, ctx, &p.Vault)...)
			p.Vault.DefRange = b.DefRange
			p.Vault.pgpKeyElems = listElements(b.Body, "pgp_keys")
		case "pki":
			diags = append(diags, gohcl.DecodeBody(b.Body, ctx, &p.PKI)...)
		case "consul":
			diags = append(diags, gohcl.DecodeBody(b.Body, ctx, &p.Consul)...)
		case "nomad":
			diags = append(diags, gohcl.DecodeBody(b.Body, ctx, &p.Nomad)...)
		case "jobs":
			diags = append(diags, decodeJobs(b.Body, ctx, &p.Jobs)...)
		case "monitoring":
			diags = append(diags, gohcl.DecodeBody(b.Body, ctx, &p.Monitoring)...)
		case "gitlab_runner":
			r := GitLabRunner{Executor: "docker", Concurrent: 2, Image: "alpine:3.20"}
			diags = append(diags, gohcl.DecodeBody(b.Body, ctx, &r)...)
			r.DefRange = b.DefRange
			p.GitLabRunner = &r
			diags = append(diags, literalSecret(b.Body, "token")...)
		case "ingress":
			in := Ingress{Port: 80}
			diags = append(diags, gohcl.DecodeBody(b.Body, ctx, &in)...)
			in.DefRange = b.DefRange
			if in.TLS != nil && in.TLS.Port == 0 {
				in.TLS.Port = 443
			}
			p.Ingress = &in
		case "docker":
			d := defaultDocker()
			diags = append(diags, gohcl.DecodeBody(b.Body, ctx, &d)...)
			d.DefRange = b.DefRange
			p.Docker = &d
		}
	}
	if _, ok := seen["provider"]; !ok && !diags.HasErrors() {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Missing provider block",
			Detail:   `Say where the machines come from: add provider "local" {} to run the whole platform on this machine, or provider "terraform" / provider "static".`,
			Subject:  body.MissingItemRange().Ptr(),
		})
	}
	return diags
}

// decodeJobs decodes the jobs block so that a job block that is present keeps
// the defaults of the attributes it does not set.
func decodeJobs(body hcl.Body, ctx *hcl.EvalContext, j *Jobs) hcl.Diagnostics {
	schema := &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "driver"}},
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "fabio"}, {Type: "prometheus"}, {Type: "alertmanager"},
			{Type: "grafana"}, {Type: "node_exporter"},
		},
	}
	content, diags := body.Content(schema)
	if a, ok := content.Attributes["driver"]; ok {
		diags = append(diags, gohcl.DecodeExpression(a.Expr, ctx, &j.Driver)...)
		j.DriverRange = a.Expr.Range()
	}
	seen := map[string]bool{}
	for _, b := range content.Blocks {
		if seen[b.Type] {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Duplicate %s block", b.Type),
				Detail:   "Each platform job is configured once; merge the blocks.",
				Subject:  b.DefRange.Ptr(),
			})
			continue
		}
		seen[b.Type] = true
		dst := map[string]*Job{
			"fabio": &j.Fabio, "prometheus": &j.Prometheus, "alertmanager": &j.Alertmanager,
			"grafana": &j.Grafana, "node_exporter": &j.NodeExporter,
		}[b.Type]
		diags = append(diags, gohcl.DecodeBody(b.Body, ctx, dst)...)
	}
	return diags
}

func decodeProvider(b *hcl.Block, ctx *hcl.EvalContext, p *Platform) hcl.Diagnostics {
	var diags hcl.Diagnostics
	p.Provider.Type = b.Labels[0]
	p.Provider.DefRange = b.DefRange
	switch b.Labels[0] {
	case "local":
		l := defaultLocal()
		diags = gohcl.DecodeBody(b.Body, ctx, &l)
		p.Provider.Local = &l
	case "terraform":
		t := TerraformProvider{Backend: "local", SSHTimeout: "5m"}
		vars, rest, d := b.Body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "vars"}}})
		diags = append(d, gohcl.DecodeBody(rest, ctx, &t)...)
		if a, ok := vars.Attributes["vars"]; ok {
			t.Vars, d = decodeVars(a, ctx)
			diags = append(diags, d...)
		}
		p.Provider.Terraform = &t
	case "static":
		s := StaticProvider{}
		diags = gohcl.DecodeBody(b.Body, ctx, &s)
		p.Provider.Static = &s
	default:
		r := b.LabelRanges[0]
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Unknown provider",
			Detail:   fmt.Sprintf("Provider %q is not supported; use \"local\", \"terraform\" or \"static\".", b.Labels[0]),
			Subject:  &r,
		})
	}
	return diags
}

// dropFollowOns removes the "value must be known" error gohcl adds when an
// expression already failed (a function call's error leaves an unknown
// value): the user needs the cause, once.
func dropFollowOns(diags hcl.Diagnostics) hcl.Diagnostics {
	failed := map[hcl.Range]bool{}
	for _, d := range diags {
		if d.Severity == hcl.DiagError && d.Subject != nil && !isFollowOn(d) {
			failed[*d.Subject] = true
		}
	}
	out := diags[:0:0]
	for _, d := range diags {
		if isFollowOn(d) && d.Subject != nil && failed[*d.Subject] {
			continue
		}
		out = append(out, d)
	}
	return out
}

// besides drops the value checks that land on a line a decode error
// already points at: what failed to decode keeps its default and would
// only be reported twice.
func besides(decode, checks hcl.Diagnostics) hcl.Diagnostics {
	var out hcl.Diagnostics
	for _, c := range checks {
		if c.Subject == nil || !slices.ContainsFunc(decode, func(d *hcl.Diagnostic) bool {
			return d.Severity == hcl.DiagError && d.Subject != nil && sameLines(*d.Subject, *c.Subject)
		}) {
			out = append(out, c)
		}
	}
	return out
}

func sameLines(a, b hcl.Range) bool {
	return a.Filename == b.Filename && a.Start.Line <= b.End.Line && b.Start.Line <= a.End.Line
}

func isFollowOn(d *hcl.Diagnostic) bool {
	return d.Severity == hcl.DiagError && strings.HasSuffix(d.Detail, "value must be known")
}

// decodeVars reads a map of Terraform variables of any types.
func decodeVars(a *hcl.Attribute, ctx *hcl.EvalContext) (map[string]cty.Value, hcl.Diagnostics) {
	v, diags := a.Expr.Value(ctx)
	if diags.HasErrors() {
		return nil, diags
	}
	if v.IsNull() || !(v.Type().IsObjectType() || v.Type().IsMapType()) || !v.IsKnown() {
		return nil, append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid vars",
			Detail:   `vars is the module's input variables as an object, e.g. vars = { region = "fra1", server_count = 3 }.`,
			Subject:  a.Expr.Range().Ptr(),
		})
	}
	out := map[string]cty.Value{}
	for it := v.ElementIterator(); it.Next(); {
		k, val := it.Element()
		out[k.AsString()] = val
	}
	return out, diags
}

// evalContext offers env("NAME") and file("path") so secrets and
// certificates never sit in the file itself. Relative paths are read from
// dir; shown is the same directory as the user named it, for messages.
// Every value the functions return is recorded in in.
func evalContext(dir, shown string, in *secretInputs) *hcl.EvalContext {
	return &hcl.EvalContext{
		Functions: map[string]function.Function{
			"env": function.New(&function.Spec{
				Params: []function.Parameter{{Name: "name", Type: cty.String}},
				Type:   function.StaticReturnType(cty.String),
				Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
					name := args[0].AsString()
					v, ok := os.LookupEnv(name)
					if !ok {
						return cty.NilVal, fmt.Errorf("environment variable %s is not set; export it before running bootstrap", name)
					}
					in.values = append(in.values, v)
					return cty.StringVal(v), nil
				},
			}),
			"file": function.New(&function.Spec{
				Params: []function.Parameter{{Name: "path", Type: cty.String}},
				Type:   function.StaticReturnType(cty.String),
				Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
					path, name := args[0].AsString(), args[0].AsString()
					if !filepath.IsAbs(path) {
						path, name = filepath.Join(dir, path), filepath.Join(shown, path)
					}
					b, err := os.ReadFile(path)
					if err != nil {
						var pe *fs.PathError
						if errors.As(err, &pe) {
							err = pe.Err // the path is in the message already
						}
						return cty.NilVal, fmt.Errorf("cannot read %s: %w", name, err)
					}
					in.values = append(in.values, string(b))
					return cty.StringVal(string(b)), nil
				},
			}),
		},
	}
}

// secretInputs is what env() and file() returned while a file was
// evaluated, and where the file calls them. Those values are the file's
// secrets: they go to the redactor (Platform.Secrets) and are left out of
// diagnostics.
type secretInputs struct {
	values []string
	// exprs are the expressions of the attributes that call env() or
	// file(), wholly or in part (url = "https://${env("HOST")}").
	exprs []hcl.Range
}

// secretExprs returns the expressions of the attributes in body that call
// env() or file().
func secretExprs(body hcl.Body) []hcl.Range {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return nil
	}
	var out []hcl.Range
	hclsyntax.VisitAll(sb, func(n hclsyntax.Node) hcl.Diagnostics {
		if a, ok := n.(*hclsyntax.Attribute); ok && callsSecretFunc(a.Expr) {
			out = append(out, a.Expr.Range())
		}
		return nil
	})
	return out
}

func callsSecretFunc(e hclsyntax.Expression) bool {
	found := false
	hclsyntax.VisitAll(e, func(n hclsyntax.Node) hcl.Diagnostics {
		if c, ok := n.(*hclsyntax.FunctionCallExpr); ok && (c.Name == "env" || c.Name == "file") {
			found = true
		}
		return nil
	})
	return found
}

// listElements returns the elements of the list attribute name in body: each
// one's place, and whether it calls env() or file(). nil when the attribute
// is not written as a list.
func listElements(body hcl.Body, name string) []listElement {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return nil
	}
	attr, ok := sb.Attributes[name]
	if !ok {
		return nil
	}
	list, ok := attr.Expr.(*hclsyntax.TupleConsExpr)
	if !ok {
		return nil
	}
	out := make([]listElement, len(list.Exprs))
	for i, e := range list.Exprs {
		out[i] = listElement{Range: e.Range(), Read: callsSecretFunc(e)}
	}
	return out
}

// listElement is one element of a list attribute.
type listElement struct {
	Range hcl.Range
	// Read is true when the element calls env() or file().
	Read bool
}

// literalSecret warns when a secret attribute is written into the file
// instead of coming from env() or file().
func literalSecret(body hcl.Body, name string) hcl.Diagnostics {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return nil
	}
	attr, ok := sb.Attributes[name]
	if !ok {
		return nil
	}
	if _, call := attr.Expr.(*hclsyntax.FunctionCallExpr); call {
		return nil
	}
	return hcl.Diagnostics{{
		Severity: hcl.DiagWarning,
		Summary:  "Secret written in the configuration file",
		Detail:   fmt.Sprintf("%s is a literal; anyone who can read this file can read it. Use %s = env(\"GITLAB_RUNNER_TOKEN\") instead.", name, name),
		Subject:  attr.Expr.Range().Ptr(),
	}}
}
