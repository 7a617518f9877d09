package jobs

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

// Variables are the HCL2 variables of a job. Values are string, bool, int,
// float64, []string, map[string]string, map[string][]byte or
// []map[string]any (a list of objects).
type Variables map[string]any

// Encode writes the variables as the content of a variables file, which is
// what Nomad's parse API takes. Strings are escaped, so "${" and "%{" in a
// value (Grafana's provisioning files have them) stay literal.
func (v Variables) Encode() (string, error) {
	f := hclwrite.NewEmptyFile()
	body := f.Body()
	names := make([]string, 0, len(v))
	for n := range v {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		val, err := ctyValue(v[n])
		if err != nil {
			return "", fmt.Errorf("job variable %s: %w", n, err)
		}
		body.SetAttributeValue(n, val)
	}
	return string(f.Bytes()), nil
}

func ctyValue(x any) (cty.Value, error) {
	switch x := x.(type) {
	case string:
		return cty.StringVal(x), nil
	case []byte:
		return cty.StringVal(string(x)), nil
	case bool:
		return cty.BoolVal(x), nil
	case int:
		return cty.NumberIntVal(int64(x)), nil
	case float64:
		return cty.NumberFloatVal(x), nil
	case []string:
		if len(x) == 0 {
			return cty.ListValEmpty(cty.String), nil
		}
		l := make([]cty.Value, len(x))
		for i, s := range x {
			l[i] = cty.StringVal(s)
		}
		return cty.ListVal(l), nil
	case map[string]string:
		m := make(map[string]cty.Value, len(x))
		for k, s := range x {
			m[k] = cty.StringVal(s)
		}
		return mapVal(m), nil
	case map[string][]byte:
		m := make(map[string]cty.Value, len(x))
		for k, b := range x {
			m[k] = cty.StringVal(string(b))
		}
		return mapVal(m), nil
	case []map[string]any:
		l := make([]cty.Value, len(x))
		for i, o := range x {
			attrs := make(map[string]cty.Value, len(o))
			for k, a := range o {
				v, err := ctyValue(a)
				if err != nil {
					return cty.NilVal, fmt.Errorf("%s: %w", k, err)
				}
				attrs[k] = v
			}
			l[i] = cty.ObjectVal(attrs)
		}
		return cty.TupleVal(l), nil
	}
	return cty.NilVal, fmt.Errorf("unsupported type %T", x)
}

func mapVal(m map[string]cty.Value) cty.Value {
	if len(m) == 0 {
		return cty.MapValEmpty(cty.String)
	}
	return cty.MapVal(m)
}

// CheckTemplateText reports whether text can be passed to a job that
// writes it with a template stanza: it must not hold the delimiters the
// stanza uses.
func CheckTemplateText(name, text string) error {
	if strings.Contains(text, TemplateLeftDelim) || strings.Contains(text, TemplateRightDelim) {
		return fmt.Errorf("%s contains the template delimiter %q or %q", name, TemplateLeftDelim, TemplateRightDelim)
	}
	return nil
}
