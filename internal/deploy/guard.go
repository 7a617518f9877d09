package deploy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	nomadapi "github.com/hashicorp/nomad/api"
)

// PlatformNamespace holds the platform's own jobs (ingress, monitoring, CI
// runners); applications never deploy there. It is config.GeneralNamespace,
// repeated so that this package needs nothing of the platform's
// configuration.
const PlatformNamespace = "general"

// MetricsTag is the service tag the platform's Prometheus scrapes
// (monitoring's consul_sd_metrics job).
const MetricsTag = "prometheus"

// checkNamespace refuses the namespaces applications must not use.
func checkNamespace(ns, from string) error {
	switch ns {
	case "":
		return errors.New("the job has no namespace: set `namespace` in the job or pass --namespace (dev or prod)")
	case PlatformNamespace:
		return fmt.Errorf("%s: namespace %q holds the platform's own jobs; deploy applications to an application namespace (dev or prod)", from, ns)
	case "default":
		return fmt.Errorf("%s: namespace %q is not an application namespace; deploy to dev or prod", from, ns)
	}
	return nil
}

// settleNamespace applies --namespace to the parsed job: it fills a job
// without one and must agree with a job that has one.
func settleNamespace(job *nomadapi.Job, flag string) error {
	inFile := ""
	if job.Namespace != nil {
		inFile = *job.Namespace
	}
	switch {
	case flag != "" && inFile != "" && inFile != flag:
		return fmt.Errorf("the job says namespace = %q but --namespace is %q: make them agree (or drop one)", inFile, flag)
	case flag != "":
		job.Namespace = &flag
		return checkNamespace(flag, "--namespace")
	default:
		return checkNamespace(inFile, "the job's namespace")
	}
}

// checkServiceNames refuses Consul services not named "<namespace>-…".
// Consul enforces it (the platform's binding rules give a namespace's jobs
// no other names): a job that breaks it would be accepted by Nomad and then
// fail to start, so deploy says so before anything is written.
func checkServiceNames(job *nomadapi.Job, ns string) error {
	var errs []error
	check := func(where string, services []*nomadapi.Service) {
		for _, s := range services {
			if s == nil || (s.Provider != "" && s.Provider != "consul") {
				continue
			}
			if !strings.HasPrefix(s.Name, ns+"-") {
				errs = append(errs, fmt.Errorf("%s: service %q: in namespace %s a service's name must start with %q (e.g. %q): the platform keeps each namespace's service names, and its routes, apart", where, s.Name, ns, ns+"-", ns+"-"+s.Name))
			}
		}
	}
	for _, tg := range job.TaskGroups {
		check(fmt.Sprintf("group %q", name(tg.Name)), tg.Services)
		for _, t := range tg.Tasks {
			check(fmt.Sprintf("task %q of group %q", t.Name, name(tg.Name)), t.Services)
		}
	}
	return errors.Join(errs...)
}

// checkImages refuses images that float: ":latest" and untagged ones
// (which mean latest), so that what runs is what was built and planned.
func checkImages(job *nomadapi.Job) error {
	var errs []error
	for _, tg := range job.TaskGroups {
		for _, task := range tg.Tasks {
			image, ok := task.Config["image"].(string)
			if !ok {
				continue
			}
			if tag, pinned := imageTag(image); !pinned && (tag == "" || tag == "latest") {
				what := "has no tag (which means :latest)"
				if tag != "" {
					what = "is :latest"
				}
				errs = append(errs, fmt.Errorf("task %q of group %q: image %q %s; use an immutable tag such as the commit (${CI_COMMIT_SHORT_SHA}) or pass --allow-latest", task.Name, name(tg.Name), image, what))
			}
		}
	}
	return errors.Join(errs...)
}

// imageTag returns the tag of an image reference, and whether it is pinned
// by digest.
func imageTag(ref string) (tag string, pinned bool) {
	if strings.Contains(ref, "@") {
		return "", true
	}
	slash, colon := strings.LastIndex(ref, "/"), strings.LastIndex(ref, ":")
	if colon > slash { // a ":" before the last "/" is a registry port
		return ref[colon+1:], false
	}
	return "", false
}

// metricsWarnings lists every service that Prometheus will not scrape: the
// dissertation's future-work item of telling developers about services
// without metrics.
func metricsWarnings(job *nomadapi.Job) []string {
	var out []string
	warn := func(s *nomadapi.Service, where string) {
		if slices.Contains(s.Tags, MetricsTag) {
			return
		}
		out = append(out, fmt.Sprintf("service %q (%s) has no %q tag: Prometheus will not scrape its metrics; add the tag (and meta { metrics_path = \"/path\" } if they are not at /metrics)", s.Name, where, MetricsTag))
	}
	for _, tg := range job.TaskGroups {
		for _, s := range tg.Services {
			warn(s, fmt.Sprintf("group %q", name(tg.Name)))
		}
		for _, task := range tg.Tasks {
			for _, s := range task.Services {
				warn(s, fmt.Sprintf("task %q of group %q", task.Name, name(tg.Name)))
			}
		}
	}
	return out
}

func name(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
