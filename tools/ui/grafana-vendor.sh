#!/usr/bin/env bash
# grafana-vendor.sh DIR: fill Grafana's public/vendor (DIR), which the Go
# module zip leaves out, for its frontend build.
#
# The webpack build imports vendor/flot/*, vendor/bootstrap/bootstrap and
# vendor/tagsinput/bootstrap-tagsinput.js (plugin_loader.ts, graph panel,
# AngularApp.ts, angular/tags.ts); nothing else in public/vendor is loaded
# by the app. Third-party files come from npm at build time, checked against
# pinned sha512 integrities; Grafana's own flot plugins, which are not on npm,
# are replaced by the small stand-ins in grafana-vendor/ (ours).
#   flot 4.2.6: its es5 bundle is jquery.flot.js (core with the time, stack,
#     selection, legend, hover … plugins); crosshair from its source/.
#   bootstrap.js: Bootstrap 3.4.1's dist/js/bootstrap.js for Bootstrap
#     2.3.2's jQuery plugins (tooltip, popover, dropdown, modal, …), then
#     grafana-vendor/bootstrap/bootstrap2-compat.js (ours: Bootstrap 2 names
#     Grafana uses), then bootstrap-3-typeahead 4.0.2 (Bootstrap 2's
#     typeahead ported to Bootstrap 3; Bootstrap 3 has none), run against
#     the global jQuery like the rest of the file.
#   bootstrap-tagsinput 0.7.1 dist/bootstrap-tagsinput.js.
set -euo pipefail
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch NAME VERSION SHA512-BASE64: npm pack into $tmp/NAME, checked.
fetch() {
  local name=$1 version=$2 want=$3 tgz got
  tgz=$(cd "$tmp" && npm pack --silent "$name@$version" | tail -n 1)
  got=$(openssl dgst -sha512 -binary "$tmp/$tgz" | base64 -w0)
  [ "sha512-$got" = "$want" ] || { echo "$name@$version: sha512-$got, want $want" >&2; exit 1; }
  mkdir -p "$tmp/$name"
  tar -xzf "$tmp/$tgz" -C "$tmp/$name" --strip-components=1
}
fetch flot 4.2.6 sha512-Iz4HCet1ZBQnjGwECz4jseD1zMnh7m2XJIMI6A62l8h2SeceLYOEmYGNQto1XhkSM9fUmqzyKhWwJ+RolWLydg==
fetch bootstrap 3.4.1 sha512-yN5oZVmRCwe5aKwzRj6736nSmKDX7pLYwsXiCj/EYmo16hODaBiT4En5btW/jhBF/seV+XMx3aYwukYC3A49DA==
fetch bootstrap-3-typeahead 4.0.2 sha512-cy1RiQ8wC1p8mM9D+hqlIZAc3llE8ddrF6lw6AhfhbF1YvqA0OrztZYMfPxPlZp1crEXE53IwyYNxehuAIWvew==
fetch bootstrap-tagsinput 0.7.1 sha512-xSks67GWgXLnmO5gqp788vhh7WoXd9mHj5uKE5zg8rvw3sNYYSCjrSlrPRlPdpYKwmuxeuf2jsNjBSWEucyB1w==

rm -rf "$dir"
mkdir -p "$dir/flot" "$dir/bootstrap" "$dir/tagsinput"
cp "$tmp/flot/dist/es5/jquery.flot.js" "$dir/flot/jquery.flot.js"
cp "$tmp/flot/source/jquery.flot.crosshair.js" "$dir/flot/"
for p in time stack selection; do
  echo "// flot's $p plugin is part of jquery.flot.js (flot 4's es5 bundle)." >"$dir/flot/jquery.flot.$p.js"
done
cp "$here"/grafana-vendor/flot/*.js "$dir/flot/"
{
  cat "$tmp/bootstrap/dist/js/bootstrap.js" "$here/grafana-vendor/bootstrap/bootstrap2-compat.js"
  # Its UMD header would require('jquery') from public/vendor: hide module
  # and define so that it takes window.jQuery.
  echo '(function (module, define) {'
  cat "$tmp/bootstrap-3-typeahead/bootstrap3-typeahead.js"
  echo '}).call(window);'
} >"$dir/bootstrap/bootstrap.js"
cp "$tmp/bootstrap-tagsinput/dist/bootstrap-tagsinput.js" "$dir/tagsinput/"
