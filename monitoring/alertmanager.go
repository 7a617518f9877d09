package monitoring

import (
	"fmt"
	"net/url"
)

// AlertmanagerConfig is what alertmanager.yml is rendered from.
type AlertmanagerConfig struct {
	// WebhookURL receives every notification (monitoring.alert_webhook_url).
	// Empty: a receiver that sends nothing.
	WebhookURL     string
	GroupWait      string // default 30s
	GroupInterval  string // default 5m
	RepeatInterval string // default 4h
}

// RenderAlertmanager renders alertmanager.yml.
func RenderAlertmanager(c AlertmanagerConfig) ([]byte, error) {
	if c.GroupWait == "" {
		c.GroupWait = "30s"
	}
	if c.GroupInterval == "" {
		c.GroupInterval = "5m"
	}
	if c.RepeatInterval == "" {
		c.RepeatInterval = "4h"
	}
	for name, d := range map[string]string{"group wait": c.GroupWait, "group interval": c.GroupInterval, "repeat interval": c.RepeatInterval} {
		if !durationRe.MatchString(d) {
			return nil, fmt.Errorf("alertmanager.yml: %s %q is not a duration like 30s or 5m", name, d)
		}
	}
	receiver := "null"
	if c.WebhookURL != "" {
		u, err := url.Parse(c.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL may carry a secret (a token in the path): never echo it.
			return nil, fmt.Errorf("alertmanager.yml: the alert webhook URL is not an http(s) URL with a host")
		}
		receiver = "webhook"
	}
	return execute("alertmanager.yml.tmpl", struct {
		AlertmanagerConfig
		Receiver string
	}{c, receiver})
}
