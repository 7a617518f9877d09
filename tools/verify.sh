#!/usr/bin/env bash
# Check that every tool in ./bin reports the pinned version.
# Usage: tools/verify.sh [tool...]   (same names as install.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(dirname "$here")/bin
. "$here/versions.env"

fail=0
check() { # label want cmd...
  local label=$1 want=$2; shift 2
  local got
  got=$("$@" 2>&1 | head -n 3) || true
  if [[ "$got" == *"$want"* ]]; then
    # What the binary says of itself, not what we asked for.
    printf '  %-16s %.70s\n' "$label" "${got%%$'\n'*}"
  else
    printf '  %-16s MISMATCH: want %s, got: %s\n' "$label" "$want" "$got" >&2
    fail=1
  fi
}

# freeport: a free TCP port on 127.0.0.1.
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# prometheus_ui: the binary has its web UI built in: started briefly on
# 127.0.0.1, it serves the mantine app at /query (not "Error opening React
# index.html") and the app's script bundle.
prometheus_ui() {
  local tmp port pid page js ok=
  tmp=$(mktemp -d); port=$(freeport)
  printf 'global:\n  scrape_interval: 1m\n' >"$tmp/prometheus.yml"
  "$bin/prometheus" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$port" >"$tmp/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/-/ready" && break
    sleep 0.1
  done
  page=$(curl -fsS "http://127.0.0.1:$port/query" 2>&1) || true
  js=$(grep -o 'src="\./assets/index-[^"]*\.js"' <<<"$page" | head -n 1 | sed 's/^src="\.\///; s/"$//') || true
  if [[ "$page" == *GLOBAL_AGENT_MODE* ]] && [ -n "$js" ] &&
    [ "$(curl -fs -o /dev/null -w '%{size_download}' "http://127.0.0.1:$port/$js")" -gt 100000 ]; then
    ok=1
  fi
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  if [ -n "$ok" ]; then
    printf '  %-16s %s\n' "prometheus-ui" "/query serves the web app ($js)"
  else
    printf '  %-16s MISSING: /query gave: %.200s\n' "prometheus-ui" "$page" >&2
    fail=1
  fi
  rm -rf "$tmp"
}

# grafana_ui: Grafana's home (bin/grafana-home) has the built frontend:
# public/views/index.html (written by webpack from index-template.html)
# loads an app bundle, and every public/build file it names is there.
grafana_ui() {
  local home=$bin/grafana-home f refs missing=() app=
  refs=$(grep -o 'public/build/[^"]*\.\(js\|css\)' "$home/public/views/index.html" 2>/dev/null | sort -u) || true
  for f in $refs; do
    [ -s "$home/$f" ] || missing+=("$f")
    case $f in public/build/app.*.js) app=$f ;; esac
  done
  if [ -n "$app" ] && [ ${#missing[@]} -eq 0 ] && [ -s "$home/public/views/error.html" ]; then
    printf '  %-16s %s\n' "grafana-ui" "index.html loads $(wc -w <<<"$refs") built files ($app)"
  else
    local why="no public/views/index.html that loads an app bundle in $home"
    [ ${#missing[@]} -eq 0 ] || why="index.html names files not in $home/public/build: ${missing[*]}"
    printf '  %-16s MISSING: %s\n' "grafana-ui" "$why" >&2
    fail=1
  fi
}

want=("$@"); [ ${#want[@]} -gt 0 ] || want=(debian consul-template vault consul nomad prometheus alertmanager fabio tf-providers terraform grafana)
echo "tools in $bin:"
for t in "${want[@]}"; do
  case $t in
  vault) check vault "v$VAULT_VERSION" "$bin/vault" version ;;
  consul) check consul "v$CONSUL_VERSION" "$bin/consul" version ;;
  nomad) check nomad "$NOMAD_VERSION" "$bin/nomad" version ;;
  previous)
    check consul-previous "v$CONSUL_PREVIOUS_VERSION" "$bin/consul-$CONSUL_PREVIOUS_VERSION" version
    check nomad-previous "$NOMAD_PREVIOUS_VERSION" "$bin/nomad-$NOMAD_PREVIOUS_VERSION" version ;;
  consul-template) check consul-template "v$CONSUL_TEMPLATE_VERSION" "$bin/consul-template" -version ;;
  fabio) check fabio "$FABIO_VERSION" "$bin/fabio" -v ;;
  prometheus)
    check prometheus "$PROMETHEUS_VERSION" "$bin/prometheus" --version
    check promtool "$PROMETHEUS_VERSION" "$bin/promtool" --version
    prometheus_ui ;;
  # The module snapshot of Grafana 10.1.0-pre reports the version of its
  # package metadata.
  alertmanager) check alertmanager "$ALERTMANAGER_VERSION" "$bin/alertmanager" --version ;;
  grafana)
    check grafana "grafana version" "$bin/grafana" -v
    grafana_ui ;;
  terraform) check terraform "Terraform v" env TF_CLI_CONFIG_FILE=/dev/null "$bin/terraform" version ;;
  tf-providers)
    for p in hashicorp/local/$TF_PROVIDER_LOCAL_VERSION hashicorp/tls/$TF_PROVIDER_TLS_VERSION \
      hetznercloud/hcloud/$TF_PROVIDER_HCLOUD_VERSION digitalocean/digitalocean/$TF_PROVIDER_DIGITALOCEAN_VERSION; do
      t=${p#*/}
      f=$(ls "$bin"/tf-mirror/registry.terraform.io/"$p"/linux_amd64/terraform-provider-* 2>/dev/null || true)
      if [ -x "$f" ]; then printf '  %-16s %s\n' "tf-${t%%/*}" "${t#*/}"; else echo "  tf-${t%%/*} missing" >&2; fail=1; fi
    done ;;
  debian)
    check alertmanager "alertmanager" "$bin/prometheus-alertmanager" --version
    check node-exporter "node_exporter" "$bin/prometheus-node-exporter" --version
    check ansible "ansible-playbook" ansible-playbook --version
    # (stderr: Debian's launcher warns about /dev/shm on some machines)
    check chromium "Chromium" sh -c 'chromium --version 2>/dev/null' ;;
  esac
done
exit $fail
