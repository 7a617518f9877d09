#!/usr/bin/env bash
# Regenerate a builder module's go.mod/go.sum after a version bump in
# tools/versions.env. The result is committed: it pins every checksum, and
# install.sh then only runs `go build` in it.
#
# A dependency's replace/exclude lines are ignored by Go, so each builder
# repeats the product's own; nested modules (api/, sdk/) are not in the
# product's zip, so their published versions are required instead.
# `go get`, not `go mod tidy`: tidy pulls the test dependencies of every
# dependency (gigabytes).
#
# The -previous builders are the patch release before the pin, for the
# rolling upgrade test (the nomad/api of the pin serves both).
#
# Usage: tools/build/regen.sh vault|consul|consul-previous|nomad|nomad-previous|fabio|prometheus|terraform-provider-hcloud
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../versions.env"
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

prep() { # name
  rm -rf "${here:?}/$1"; mkdir -p "$here/$1"; cd "$here/$1"
  printf 'module bootstrap-tools/%s\n\ngo 1.26\n' "$1" >go.mod
}

case ${1:?name} in
vault)
  prep vault
  go mod edit \
    -replace=github.com/99designs/keyring=github.com/Jeffail/keyring@v1.2.3 \
    -replace=github.com/ma314smith/signedxml@v1.1.1=github.com/moov-io/signedxml@v1.1.1
  go get -tool "github.com/hashicorp/vault@v$VAULT_VERSION"
  ;;
consul | consul-previous)
  version=$CONSUL_VERSION
  [ "$1" = consul-previous ] && version=$CONSUL_PREVIOUS_VERSION
  prep "$1"
  go mod edit -exclude=github.com/hashicorp/go-msgpack@v1.1.5 \
              -exclude=github.com/hashicorp/go-msgpack@v1.1.6
  go get -tool "github.com/hashicorp/consul@v$version"
  ;;
nomad | nomad-previous)
  version=$NOMAD_VERSION
  [ "$1" = nomad-previous ] && version=$NOMAD_PREVIOUS_VERSION
  prep "$1"
  go mod edit \
    -replace=github.com/Microsoft/go-winio=github.com/endocrimes/go-winio@v0.4.13-0.20190628114223-fb47a8b41948 \
    -replace=github.com/hashicorp/hcl=github.com/hashicorp/hcl@v1.0.1-nomad-1 \
    -require="github.com/hashicorp/nomad/api@$NOMAD_API_VERSION"
  go get -tool "github.com/hashicorp/nomad@v$version"
  ;;
fabio)
  prep fabio
  # fabio's checksum is not in the public sum database.
  GONOSUMDB=github.com/fabiolb/fabio GOFLAGS="$GOFLAGS -mod=mod" \
    go get -tool "github.com/fabiolb/fabio@v$FABIO_VERSION"
  ;;
terraform-provider-hcloud)
  prep terraform-provider-hcloud
  # hcloud's checksum is not in the public sum database.
  GONOSUMDB=github.com/hetznercloud/terraform-provider-hcloud \
    go get -tool "github.com/hetznercloud/terraform-provider-hcloud@v$TF_PROVIDER_HCLOUD_VERSION"
  ;;
prometheus)
  prep prometheus
  go mod edit \
    -exclude=github.com/linode/linodego@v1.0.0 \
    -exclude=github.com/grpc-ecosystem/grpc-gateway@v1.14.7 \
    -exclude=google.golang.org/api@v0.30.0 \
    -replace=cloud.google.com/go=cloud.google.com/go@v0.123.0
  go get -tool "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" \
               "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
  ;;
alertmanager)
  prep alertmanager
  go get -tool "github.com/prometheus/alertmanager/cmd/alertmanager@v$ALERTMANAGER_VERSION"
  ;;
*) echo "unknown builder $1" >&2; exit 2 ;;
esac
echo "regenerated $here/$1"
