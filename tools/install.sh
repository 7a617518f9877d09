#!/usr/bin/env bash
# make tools: put pinned vault, consul, nomad, consul-template, fabio,
# prometheus/promtool, grafana, alertmanager, node-exporter, terraform and two
# terraform providers into ./bin.
#
# Each tool is built (or downloaded) once into a cache outside the repository,
# keyed by version: ${XDG_CACHE_HOME:-$HOME/.cache}/bootstrap/tools/<name>-<version>/.
# ./bin only holds symlinks into it, so a second run or a fresh clone on the
# same machine takes seconds.
#
# Where releases.hashicorp.com answers (a laptop), HashiCorp binaries are
# downloaded with checksum and signature verification (tools/fetch, hc-install).
# Where it does not (CI, air-gapped), they are built from the Go module proxy
# with the builder modules in tools/build/<name>/, one at a time.
#
# Prometheus and Grafana get their real web UIs, built with Node from their
# module sources (pnpm and yarn from npm, tools/ui/); Grafana's frontend is
# cached apart from its server (grafana-ui-<version>-<hash>), and built in
# the background while the Go builds run.
#
# Usage: tools/install.sh [tool...]   (default: all)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=versions.env
. "$here/versions.env"

cache=${BOOTSTRAP_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bootstrap/tools}
bin=$repo/bin
mkdir -p "$cache" "$bin" "$cache/logs"

# Every link strips the debug information (-w), so the compiler need not
# write it (-dwarf=false): less work for every package of a cold build.
export GOFLAGS="-buildvcs=false -gcflags=all=-dwarf=false"
export GOTOOLCHAIN=local
# Nor the C compiler of the cgo builds (Go's default is -g -O2): Grafana's
# SQLite is one large C file.
export CGO_CFLAGS=${CGO_CFLAGS:--O2}
buildflags=(-trimpath "-ldflags=-s -w")

say() { printf '%s tools: %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

# run NAME CMD...: run a build step with its output in the tool's log; on
# failure name the tool and the log.
run() {
  local name=$1; shift
  local log=$cache/logs/$name.log
  if ! "$@" >>"$log" 2>&1; then
    tail -n 20 "$log" >&2 || true
    die "$name failed; full log: $log"
  fi
}

# link NAME DIR: link every executable of a cached tool dir into ./bin.
link() {
  local f
  for f in "$2"/bin/*; do
    ln -sfn "$f" "$bin/$(basename "$f")"
  done
}

# have NAME VERSION: true when the cache already holds this tool version.
have() { [ -f "$cache/$1-$2/.done" ]; }

done_mark() { date -u +%FT%TZ >"$cache/$1-$2/.done"; }

releases_reachable() {
  [ "${BOOTSTRAP_TOOLS_OFFLINE:-}" = 1 ] && return 1
  curl -fsS --max-time 5 -o /dev/null https://releases.hashicorp.com/ 2>/dev/null
}

# fetch_release NAME VERSION DEST: download a HashiCorp release with hc-install
# (checksums and the HashiCorp signature are verified).
fetch_release() {
  (cd "$here/fetch" && go run . -product "$1" -version "$2" -dest "$3")
}

# builder NAME: build a HashiCorp product from its builder module.
gobuild_module() { # name dir pkg out [tags]
  local name=$1 dir=$2 pkg=$3 out=$4 tags=${5:-}
  (cd "$dir" && run "$name" go build "${buildflags[@]}" ${tags:+-tags "$tags"} -o "$out" "$pkg")
}

# hashi NAME VERSION [FLAVOUR CGO TAGS BUILDER OUT]: FLAVOUR names a build
# that differs from the plain one (it is part of the cache key, so a changed
# recipe rebuilds), CGO is CGO_ENABLED, TAGS the build tags, BUILDER the
# builder module (default NAME), OUT the name in ./bin (default NAME).
hashi() {
  local name=$1 version=$2 flavour=${3:-} cgo=${4:-0} tags=${5:-} builder=${6:-$1} out=${7:-$1}
  local key=$version${flavour:+-$flavour} dest=$cache/$1-$2${3:+-$3}
  if have "$name" "$key"; then link "$name" "$dest"; return; fi
  rm -rf "$dest"; mkdir -p "$dest/bin"; : >"$cache/logs/$builder.log"
  local s=$SECONDS
  if releases_reachable && fetch_release "$name" "$version" "$dest/bin" >>"$cache/logs/$builder.log" 2>&1; then
    [ "$out" = "$name" ] || mv "$dest/bin/$name" "$dest/bin/$out"
    say "$name $version downloaded in $((SECONDS - s))s"
  else
    say "$name $version: building from the Go module proxy (log: $cache/logs/$builder.log)"
    CGO_ENABLED=$cgo gobuild_module "$builder" "$here/build/$builder" "github.com/hashicorp/$name" "$dest/bin/$out" "$tags"
    say "$name $version built in $((SECONDS - s))s ($(du -h "$dest/bin/$out" | cut -f1))"
  fi
  done_mark "$name" "$key"
  link "$name" "$dest"
}

# Built from source with Vault's own "minimal" tag (BUILD_MINIMAL in its
# Makefile): the core plugins only (pki, kv, transit, ssh; approle, cert,
# jwt/oidc, userpass, token), raft storage and the file audit device,
# which is all the platform uses, without the full registry's cloud SDKs
# and database plugins (cold: 704 s instead of 877 s, 139 MB instead of
# 345 MB). A downloaded release is the full one.
t_vault() { hashi vault "$VAULT_VERSION" minimal 0 minimal; }
t_consul() { hashi consul "$CONSUL_VERSION"; }
# Nomad's exec driver (the isolating driver of the application namespaces
# on the local provider) is only compiled in with cgo, as in the official
# builds; the ui tag embeds the web UI the module ships prebuilt.
t_nomad() { hashi nomad "$NOMAD_VERSION" cgo-ui 1 ui; }
# The patch releases before the pins, as bin/consul-<version> and
# bin/nomad-<version>: the rolling upgrade test starts a platform on them.
# Not in the default list (make up does not need them): make test asks.
t_previous() {
  hashi consul "$CONSUL_PREVIOUS_VERSION" previous 0 "" consul-previous "consul-$CONSUL_PREVIOUS_VERSION"
  hashi nomad "$NOMAD_PREVIOUS_VERSION" previous-cgo-ui 1 ui nomad-previous "nomad-$NOMAD_PREVIOUS_VERSION"
}

t_consul-template() {
  local name=consul-template version=$CONSUL_TEMPLATE_VERSION dest=$cache/consul-template-$CONSUL_TEMPLATE_VERSION
  if have $name "$version"; then link $name "$dest"; return; fi
  rm -rf "$dest"; mkdir -p "$dest/bin"; : >"$cache/logs/$name.log"
  local s=$SECONDS
  if releases_reachable && fetch_release $name "$version" "$dest/bin" >>"$cache/logs/$name.log" 2>&1; then
    say "$name $version downloaded in $((SECONDS - s))s"
  else
    say "$name $version: building (log: $cache/logs/$name.log)"
    CGO_ENABLED=0 GOBIN=$dest/bin run $name go install "${buildflags[@]}" \
      "github.com/hashicorp/consul-template@v$version"
    say "$name $version built in $((SECONDS - s))s"
  fi
  done_mark $name "$version"
  link $name "$dest"
}

t_fabio() {
  local name=fabio version=$FABIO_VERSION dest=$cache/fabio-$FABIO_VERSION
  if have $name "$version"; then link $name "$dest"; return; fi
  rm -rf "$dest"; mkdir -p "$dest/bin"; : >"$cache/logs/$name.log"
  local s=$SECONDS
  say "$name $version: building (log: $cache/logs/$name.log)"
  CGO_ENABLED=0 gobuild_module $name "$here/build/fabio" github.com/fabiolb/fabio "$dest/bin/fabio"
  say "$name $version built in $((SECONDS - s))s"
  done_mark $name "$version"
  link $name "$dest"
}

# Node tools for the web UIs, installed once from npm into the cache.
# node_tools NAME: prints the bin dir of the pinned pnpm (newer pnpm needs
# Node 22); NAME is the tool whose log gets the output.
node_tools() {
  local dest=$cache/node-tools/pnpm-$PNPM_VERSION
  if [ ! -f "$dest/.done" ]; then
    rm -rf "$dest"; mkdir -p "$dest"
    run "$1" npm install -g --no-fund --no-audit --prefix "$dest" "pnpm@$PNPM_VERSION"
    date -u +%FT%TZ >"$dest/.done"
  fi
  echo "$dest/bin"
}

# modsrc MODULE@VERSION NAME: the module's directory in the module cache
# (downloaded when missing; NAME is the tool whose log gets the output).
modsrc() {
  local dir
  dir=$(go env GOMODCACHE)/${1%@*}@${1#*@}
  [ -d "$dir" ] || { run "$2" go mod download "$1"; }
  echo "$dir"
}

# Prometheus with its web UI (the mantine app; "builtinassets" embeds it)
# built from a writable copy of the module source, the way upstream's
# Makefile does: pnpm builds web/ui into web/ui/static, compress_assets.sh
# writes web/ui/embed.go, and the Go build uses the module's own go.mod.
# The cache key carries the hash of web/ui/pnpm-lock.yaml; the pnpm store
# stays in the cache for the next build.
t_prometheus() {
  local name=prometheus version=$PROMETHEUS_VERSION src
  src=$(modsrc "github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION" $name)
  local ui
  ui=$(cat "$src/web/ui/pnpm-lock.yaml" - <<<"pnpm-$PNPM_VERSION" | sha256sum | cut -c1-12)
  local key=$version-ui-$ui dest=$cache/prometheus-$version-ui-$ui
  if have $name "$key"; then link $name "$dest"; return; fi
  rm -rf "$dest"; mkdir -p "$dest/bin"; : >"$cache/logs/$name.log"
  local s=$SECONDS pnpmbin work=$cache/prometheus-work
  say "$name $version: building the web UI, prometheus and promtool (log: $cache/logs/$name.log)"
  pnpmbin=$(node_tools $name)
  rm -rf "$work"; mkdir -p "$work"
  cp -r "$src" "$work/src"; chmod -R u+w "$work/src"
  (cd "$work/src/web/ui" && PATH=$pnpmbin:$PATH CI=true run $name pnpm install --frozen-lockfile \
    --store-dir "$cache/node-tools/pnpm-store" --reporter=append-only)
  (cd "$work/src/web/ui" && PATH=$pnpmbin:$PATH CI= run $name pnpm run build:mantine-ui)
  (cd "$work/src" && run $name bash scripts/compress_assets.sh)
  say "$name $version: web UI built in $((SECONDS - s))s"
  local v="-X github.com/prometheus/common/version.Version=$version -X github.com/prometheus/common/version.Branch=HEAD -X github.com/prometheus/common/version.Revision=v$version"
  (cd "$work/src" && GOWORK=off CGO_ENABLED=0 run $name go build -trimpath "-ldflags=-s -w $v" \
    -tags builtinassets,remove_all_sd,enable_consul_sd,enable_nomad_sd \
    -o "$dest/bin/" ./cmd/prometheus ./cmd/promtool)
  rm -rf "$work"
  say "$name $version built in $((SECONDS - s))s"
  done_mark $name "$key"
  link $name "$dest"
}

t_alertmanager() {
  local name=alertmanager version=$ALERTMANAGER_VERSION dest=$cache/alertmanager-$ALERTMANAGER_VERSION
  if have $name "$version"; then link $name "$dest"; return; fi
  rm -rf "$dest"; mkdir -p "$dest/bin"; : >"$cache/logs/$name.log"
  local s=$SECONDS
  say "$name $version: building (log: $cache/logs/$name.log)"
  local v="-X github.com/prometheus/common/version.Version=$version -X github.com/prometheus/common/version.Branch=HEAD -X github.com/prometheus/common/version.Revision=v$version"
  (cd "$here/build/alertmanager" && CGO_ENABLED=0 run $name go build -trimpath "-ldflags=-s -w $v" \
    -o "$dest/bin/alertmanager" github.com/prometheus/alertmanager/cmd/alertmanager)
  say "$name $version built in $((SECONDS - s))s"
  done_mark $name "$version"
  link $name "$dest"
}

# Grafana's web frontend (public/build and the public/views/index.html and
# error.html that webpack writes from their templates), built from the
# module source. The module's yarn 3.4.1 cannot build on Node 20: yarn
# $YARN_VERSION from npm runs instead. tools/ui/grafana-xlsx.patch takes xlsx
# from npm (the lockfile's CDN tarball is out of reach), tools/ui/grafana-vendor.sh
# fills public/vendor, which the module zip leaves out;
# tools/ui/grafana-webpack.prod.js builds without source maps. Keyed by the Grafana
# version and the hash of yarn.lock and of our patch and helpers; the yarn
# cache stays in the cache dir for the next build. Sets grafana_ui_dir.
grafana_ui() {
  local name=grafana-ui src=$1 key
  key=$({ cat "$src/yarn.lock" "$here/ui/grafana-xlsx.patch" "$here/ui/grafana-vendor.sh" "$here"/ui/grafana-vendor/*/* \
    "$here/ui/grafana-webpack.prod.js"
    echo "yarn-$YARN_VERSION"; } | sha256sum | cut -c1-12)
  local dest=$cache/grafana-ui-$GRAFANA_VERSION-$key
  grafana_ui_dir=$dest
  have grafana-ui "$GRAFANA_VERSION-$key" && return
  rm -rf "$dest"; mkdir -p "$dest/views"; : >"$cache/logs/$name.log"
  local s=$SECONDS work=$cache/grafana-ui-work
  say "$name $GRAFANA_VERSION: building the web frontend (log: $cache/logs/$name.log)"
  local yarn=$cache/node-tools/yarn-$YARN_VERSION.cjs
  if [ ! -f "$yarn" ]; then
    mkdir -p "$cache/node-tools/tmp"
    (cd "$cache/node-tools/tmp" && run $name npm pack "@yarnpkg/cli-dist@$YARN_VERSION" &&
      run $name tar -xzf "yarnpkg-cli-dist-$YARN_VERSION.tgz" package/bin/yarn.js)
    mv "$cache/node-tools/tmp/package/bin/yarn.js" "$yarn"
    rm -rf "$cache/node-tools/tmp"
  fi
  rm -rf "$work/src"; mkdir -p "$work/yarn-cache"
  cp -r "$src" "$work/src"; chmod -R u+w "$work/src"
  rm -rf "$work/src/public/build" "$work/src/public/views/index.html" "$work/src/public/views/error.html"
  # The one git dependency (tether-drop) is in the module's own yarn cache;
  # with no mirror, yarn names its cache files <package>-<cacheKey>.zip.
  local z ck
  ck=$(awk '/^  cacheKey:/ {print $2; exit}' "$work/src/yarn.lock")
  for z in "$work"/src/.yarn/cache/*.zip; do
    z=$(basename "$z")
    cp -n "$work/src/.yarn/cache/$z" "$work/yarn-cache/${z%-*}-$ck.zip"
  done
  (cd "$work/src" && run $name patch -p1 <"$here/ui/grafana-xlsx.patch")
  run $name "$here/ui/grafana-vendor.sh" "$work/src/public/vendor"
  # All of yarn's files in the cache dir: its package cache, and no mirror
  # in ~/.yarn/berry.
  local env=(YARN_YARN_PATH="$yarn" YARN_CACHE_FOLDER="$work/yarn-cache" YARN_ENABLE_GLOBAL_CACHE=false
    YARN_ENABLE_MIRROR=false YARN_GLOBAL_FOLDER="$work/yarn-global"
    YARN_ENABLE_TELEMETRY=0 YARN_ENABLE_PROGRESS_BARS=false CYPRESS_INSTALL_BINARY=0)
  (cd "$work/src" && export "${env[@]}" && run $name node "$yarn" install --immutable)
  say "$name: yarn install done after $((SECONDS - s))s"
  cp "$here/ui/grafana-webpack.prod.js" "$work/src/scripts/webpack/"
  (cd "$work/src" && export "${env[@]}" NODE_ENV=production && run $name node "$yarn" run webpack \
    --config scripts/webpack/grafana-webpack.prod.js)
  mv "$work/src/public/build" "$dest/build"
  mv "$work/src/public/views/index.html" "$work/src/public/views/error.html" "$dest/views/"
  rm -rf "$work/src"
  say "$name $GRAFANA_VERSION built in $((SECONDS - s))s ($(du -sh "$dest/build" | cut -f1))"
  done_mark grafana-ui "$GRAFANA_VERSION-$key"
}

# The frontend alone, which the main run starts in the background: its
# yarn install is mostly waiting on the npm registry (~4 min cold).
t_grafana-ui() {
  grafana_ui "$(modsrc "github.com/grafana/grafana@$GRAFANA_MODULE_VERSION" grafana-ui)"
}

# grafana_home DEST: put the cached frontend into the server's home.
grafana_home() {
  # The background build, if any, first; if it failed, grafana_ui builds
  # again here, and its error stops the run.
  if [ -n "${ui_pid:-}" ]; then
    wait "$ui_pid" || say "grafana-ui: the background build failed (log: $cache/logs/grafana-ui-bg.log); building it again"
    ui_pid=
  fi
  grafana_ui "$1/home"
  ln -sfn "$grafana_ui_dir/build" "$1/home/public/build"
  # Copies, not links: Grafana loads its views with fs.WalkDir, which skips
  # symlinks, and then panics on the missing error.html.
  rm -f "$1/home/public/views/index.html" "$1/home/public/views/error.html"
  cp "$grafana_ui_dir/views/index.html" "$grafana_ui_dir/views/error.html" "$1/home/public/views/"
  ln -sfn "$1/home" "$bin/grafana-home"
}

# The server; its home (bin/grafana-home, the homepath the platform runs it
# with) is a copy of the module source, with the frontend linked in.
t_grafana() {
  # "-stamped": built with its version in the binary (it said 9.2.0 before).
  local name=grafana version=$GRAFANA_VERSION-stamped dest=$cache/grafana-$GRAFANA_VERSION-stamped
  if have $name "$version"; then link $name "$dest"; grafana_home "$dest"; return; fi
  rm -rf "$dest"; mkdir -p "$dest/bin"; : >"$cache/logs/$name.log"
  local s=$SECONDS
  say "$name $version: building the server from the Go module proxy (log: $cache/logs/$name.log)"
  local src
  src=$(modsrc "github.com/grafana/grafana@$GRAFANA_MODULE_VERSION" $name)
  cp -r "$src" "$dest/home"
  chmod -R u+w "$dest/home"
  (cd "$dest/home" && GOBIN=$dest/wire run $name go install github.com/google/wire/cmd/wire@"$WIRE_VERSION")
  (cd "$dest/home" && run $name "$dest/wire/wire" gen -tags oss ./pkg/server)
  # Grafana's own build stamps these; without them it reports the 9.2.0 in
  # its source. The commit is the one the module's pseudo-version names.
  local ld="-s -w -X main.version=$GRAFANA_VERSION -X main.commit=${GRAFANA_MODULE_VERSION##*-} -X main.buildBranch=main"
  (cd "$dest/home" && CGO_ENABLED=1 run $name go build -trimpath -ldflags="$ld" -tags oss -o "$dest/bin/grafana" ./pkg/cmd/grafana)
  rm -rf "$dest/wire"
  say "$name $version built in $((SECONDS - s))s"
  done_mark $name "$version"
  link $name "$dest"
  grafana_home "$dest"
}

t_terraform() {
  if command -v terraform >/dev/null 2>&1 && [ "$(command -v terraform)" != "$bin/terraform" ]; then
    ln -sfn "$(command -v terraform)" "$bin/terraform"
    return
  fi
  local name=terraform version=$TERRAFORM_VERSION dest=$cache/terraform-$TERRAFORM_VERSION
  if have $name "$version"; then link $name "$dest"; return; fi
  rm -rf "$dest"; mkdir -p "$dest/bin"; : >"$cache/logs/$name.log"
  local s=$SECONDS
  if releases_reachable && fetch_release $name "$version" "$dest/bin" >>"$cache/logs/$name.log" 2>&1; then
    say "$name $version downloaded in $((SECONDS - s))s"
  else
    say "$name $version: building (log: $cache/logs/$name.log)"
    CGO_ENABLED=0 GOBIN=$dest/bin run $name go install "${buildflags[@]}" "github.com/hashicorp/terraform@v$version"
    say "$name $version built in $((SECONDS - s))s"
  fi
  done_mark $name "$version"
  link $name "$dest"
}

# Terraform providers go into a filesystem mirror the tests point terraform at.
tf_provider() { # type module module-version version
  local type=$1 module=$2 modver=$3 version=$4 name=terraform-provider-$1
  local dest=$cache/$name-$version
  if ! have "$name" "$version"; then
    rm -rf "$dest"; mkdir -p "$dest/gobin"; : >"$cache/logs/$name.log"
    local s=$SECONDS
    say "$name $version: building (log: $cache/logs/$name.log)"
    CGO_ENABLED=0 GOBIN=$dest/gobin run "$name" go install "${buildflags[@]}" "$module@$modver"
    local plat=$dest/mirror/registry.terraform.io/hashicorp/$type/$version/linux_amd64
    mkdir -p "$plat"
    mv "$dest"/gobin/* "$plat/${name}_v$version"
    rm -rf "$dest/gobin"
    say "$name $version built in $((SECONDS - s))s"
    done_mark "$name" "$version"
  fi
  tf_mirror_link hashicorp "$type" "$version" "$dest"
}

# tf_mirror_link NAMESPACE TYPE VERSION DEST: put a cached provider into
# bin/tf-mirror. Terraform's filesystem mirror does not follow a linked
# directory, so the directories are real and only the binary is a link.
tf_mirror_link() {
  local ns=$1 type=$2 version=$3 dest=$4
  local rel=registry.terraform.io/$ns/$type/$version/linux_amd64 file=terraform-provider-${type}_v$version
  # An older install.sh linked the whole directory.
  [ -L "$bin/tf-mirror/registry.terraform.io/$ns/$type" ] && rm "$bin/tf-mirror/registry.terraform.io/$ns/$type"
  mkdir -p "$bin/tf-mirror/$rel"
  ln -sfn "$dest/mirror/$rel/$file" "$bin/tf-mirror/$rel/$file"
}

# hcloud from its builder module (go install refuses it: the proxy does not
# list its versions).
tf_provider_hcloud() {
  local name=terraform-provider-hcloud version=$TF_PROVIDER_HCLOUD_VERSION
  local dest=$cache/$name-$version
  local plat=$dest/mirror/registry.terraform.io/hetznercloud/hcloud/$version/linux_amd64
  if ! have "$name" "$version"; then
    rm -rf "$dest"; mkdir -p "$plat"; : >"$cache/logs/$name.log"
    local s=$SECONDS
    say "$name $version: building (log: $cache/logs/$name.log)"
    CGO_ENABLED=0 gobuild_module "$name" "$here/build/$name" github.com/hetznercloud/terraform-provider-hcloud "$plat/${name}_v$version"
    say "$name $version built in $((SECONDS - s))s"
    done_mark "$name" "$version"
  fi
  tf_mirror_link hetznercloud hcloud "$version" "$dest"
}

# digitalocean from the module zip (the proxy refuses its go.mod), checked
# against the pinned sha256, built with its own go.sum.
tf_provider_digitalocean() {
  local name=terraform-provider-digitalocean version=$TF_PROVIDER_DIGITALOCEAN_VERSION
  local dest=$cache/$name-$version
  local plat=$dest/mirror/registry.terraform.io/digitalocean/digitalocean/$version/linux_amd64
  if ! have "$name" "$version"; then
    rm -rf "$dest"; mkdir -p "$plat" "$dest/src"; : >"$cache/logs/$name.log"
    local s=$SECONDS proxy
    proxy=$(go env GOPROXY); proxy=${proxy%%,*}
    say "$name $version: building (log: $cache/logs/$name.log)"
    run "$name" curl -fsSL -o "$dest/src.zip" "$proxy/github.com/digitalocean/terraform-provider-digitalocean/@v/v$version.zip"
    echo "$TF_PROVIDER_DIGITALOCEAN_ZIP_SHA256  $dest/src.zip" | run "$name" sha256sum -c -
    run "$name" python3 -m zipfile -e "$dest/src.zip" "$dest/src"
    (cd "$dest/src/github.com/digitalocean/$name@v$version" && chmod -R u+w . &&
      CGO_ENABLED=0 GOFLAGS="$GOFLAGS -mod=mod" run "$name" go build "${buildflags[@]}" -o "$plat/${name}_v$version" .)
    rm -rf "$dest/src" "$dest/src.zip"
    say "$name $version built in $((SECONDS - s))s"
    done_mark "$name" "$version"
  fi
  tf_mirror_link digitalocean digitalocean "$version" "$dest"
}

t_tf-providers() {
  tf_provider local "$TF_PROVIDER_LOCAL_MODULE" "$TF_PROVIDER_LOCAL_MODULE_VERSION" "$TF_PROVIDER_LOCAL_VERSION"
  tf_provider tls "$TF_PROVIDER_TLS_MODULE" "$TF_PROVIDER_TLS_MODULE_VERSION" "$TF_PROVIDER_TLS_VERSION"
  tf_provider_hcloud
  tf_provider_digitalocean
}

# Debian packages. Alertmanager and node-exporter are unpacked, not installed:
# their post-install scripts would start daemons on all interfaces.
apt_ready=
apt_update() {
  [ -n "$apt_ready" ] && return
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  run apt $sudo apt-get update -q
  apt_ready=1
}

t_debian() {
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  local missing=()
  command -v ansible-playbook >/dev/null || missing+=(ansible)
  command -v ansible-lint >/dev/null || missing+=(ansible-lint)
  command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh >/dev/null || missing+=(openssh-client)
  # A static busybox: the tests' application jobs run its httpd with the
  # exec driver, inside a chroot that holds no language runtime.
  [ -x /bin/busybox ] || missing+=(busybox-static)
  # The live view is tested on a real terminal: a tmux pane.
  command -v tmux >/dev/null || missing+=(tmux)
  # The machine lab (internal/lab): systemd-nspawn containers booted from a
  # debootstrap'ed Debian rootfs.
  command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  # Headless Chromium for the browser tests of the web UIs, with a font so
  # that pages have text glyphs.
  command -v chromium >/dev/null || missing+=(chromium)
  dpkg-query -W -f='${Status}' fonts-liberation 2>/dev/null | grep -q 'ok installed' || missing+=(fonts-liberation)
  if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive run apt $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  say "ansible: $(ansible-playbook --version 2>/dev/null | head -1)"
  say "chromium: $(chromium --version 2>/dev/null | head -1)"

  local pkg
  for pkg in prometheus-alertmanager prometheus-node-exporter; do
    local dest=$cache/$pkg
    if [ ! -f "$dest/.done" ]; then
      apt_update
      rm -rf "$dest"; mkdir -p "$dest/deb" "$dest/root" "$dest/bin"
      (cd "$dest/deb" && run "$pkg" apt-get download "$pkg")
      run "$pkg" dpkg-deb -x "$dest"/deb/*.deb "$dest/root"
      local f
      for f in "$dest"/root/usr/bin/*; do ln -sfn "$f" "$dest/bin/$(basename "$f")"; done
      date -u +%FT%TZ >"$dest/.done"
    fi
    link "$pkg" "$dest"
  done
  say "alertmanager: $("$bin/prometheus-alertmanager" --version 2>&1 | head -1)"
  say "node-exporter: $("$bin/prometheus-node-exporter" --version 2>&1 | head -1)"
}

all=(debian consul-template vault consul nomad prometheus alertmanager fabio tf-providers terraform grafana)
want=("$@"); [ ${#want[@]} -gt 0 ] || want=("${all[@]}")
for t in "${want[@]}"; do
  declare -F "t_$t" >/dev/null || die "unknown tool $t (known: ${all[*]})"
done

# A cold run spends minutes per HashiCorp build fetching its modules (220 s
# for Consul's, measured): a background job fetches those of the builds to
# come while the first ones compile. The module cache locks what two
# fetches share; a run that fails stops the job.
prefetch=()
for t in "${want[@]}"; do
  case $t in
    vault) have vault "$VAULT_VERSION" || prefetch+=(vault) ;;
    consul) have consul "$CONSUL_VERSION" || prefetch+=(consul) ;;
    nomad) have nomad "$NOMAD_VERSION-cgo-ui" || prefetch+=(nomad) ;;
    previous)
      have consul "$CONSUL_PREVIOUS_VERSION-previous" || prefetch+=(consul-previous)
      have nomad "$NOMAD_PREVIOUS_VERSION-previous-cgo-ui" || prefetch+=(nomad-previous)
      ;;
  esac
done
# Background jobs run in their own process groups, so that the trap stops
# their children too.
bg=()
trap 'for p in "${bg[@]}"; do kill -- "-$p" 2>/dev/null || true; done' EXIT
if [ ${#prefetch[@]} -gt 0 ] && ! releases_reachable; then
  setsid bash -c 'for d in "${@:2}"; do (cd "$1/$d" && nice -n 19 go mod download) || true; done' \
    prefetch "$here/build" "${prefetch[@]}" >>"$cache/logs/prefetch.log" 2>&1 &
  bg+=($!)
fi
# Grafana's frontend builds alongside the Go builds (it returns at once
# when cached); t_grafana waits for it.
ui_pid=
if [[ " ${want[*]} " == *" grafana "* ]]; then
  setsid "$0" grafana-ui >"$cache/logs/grafana-ui-bg.log" 2>&1 &
  ui_pid=$!
  bg+=($ui_pid)
fi

for t in "${want[@]}"; do
  "t_$t"
done
"$here/verify.sh" "${want[@]}"
