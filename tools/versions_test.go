package tools

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
)

// The binaries in bin/ are the versions pinned here, which the docker
// profile's images are named from (jobs.Images). make tools does not
// enforce every pin: node-exporter is whatever Debian package the host's
// apt serves, so a rebuild on another release would otherwise leave the
// image naming a version no test ran. GitLab Runner is not checked: it
// cannot be built here, so bin/ never has it.
func TestBinariesArePinned(t *testing.T) {
	v := Versions()
	for _, tc := range []struct {
		bin  string
		args []string
		want string // the first line of the output, up to a space
	}{
		{"fabio", []string{"-v"}, v["FABIO_VERSION"]},
		{"prometheus", []string{"--version"}, "prometheus, version " + v["PROMETHEUS_VERSION"]},
		{"alertmanager", []string{"--version"}, "alertmanager, version " + v["ALERTMANAGER_VERSION"]},
		{"prometheus-node-exporter", []string{"--version"}, "node_exporter, version " + v["NODE_EXPORTER_VERSION"]},
		{"grafana", []string{"-v"}, "grafana version " + v["GRAFANA_VERSION"]},
	} {
		t.Run(tc.bin, func(t *testing.T) {
			out, err := exec.Command(testcluster.Bin(t, tc.bin), tc.args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", tc.bin, strings.Join(tc.args, " "), err, out)
			}
			first, _, _ := strings.Cut(string(out), "\n")
			// The space after the version: 3.15.0 is not 3.15.01.
			if !strings.HasPrefix(first+" ", tc.want+" ") {
				t.Errorf("bin/%s reports %q, want %q (tools/versions.env)", tc.bin, first, tc.want)
			}
		})
	}
}
