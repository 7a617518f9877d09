package jobs

// Images returns the images of the docker profile, by job and image
// variable (the prometheus job has two: image and alertmanager_image),
// named from pins, the keys of tools/versions.env (tools.Versions()).
//
// The pins are the versions the binary profile runs in the tests, so both
// profiles run the same releases; the exceptions are Grafana, whose tested
// build has no image (GRAFANA_IMAGE_VERSION), and GitLab Runner, which is
// not built here at all. Each job file's defaults repeat these names, so
// that the files also run with `nomad job run`; TestImageDefaults keeps the
// two equal.
func Images(pins map[string]string) map[string]map[string]string {
	return map[string]map[string]string{
		Fabio: {"image": "fabiolb/fabio:" + pins["FABIO_VERSION"]},
		Prometheus: {
			"image":              "prom/prometheus:v" + pins["PROMETHEUS_VERSION"],
			"alertmanager_image": "prom/alertmanager:v" + pins["ALERTMANAGER_VERSION"],
		},
		Grafana:      {"image": "grafana/grafana-oss:" + pins["GRAFANA_IMAGE_VERSION"]},
		NodeExporter: {"image": "quay.io/prometheus/node-exporter:v" + pins["NODE_EXPORTER_VERSION"]},
		GitLabRunner: {"image": "gitlab/gitlab-runner:alpine-v" + pins["GITLAB_RUNNER_VERSION"]},
	}
}
