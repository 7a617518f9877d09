'use strict';
// Grafana's production webpack config (scripts/webpack/webpack.prod.js),
// copied next to it for the build by tools/install.sh, with two changes for
// a one-off build: no source maps (a smaller public/build, a shorter build)
// and no persistent webpack cache (the build tree is thrown away after).
const prod = require('./webpack.prod.js');

module.exports = (env = {}) => ({ ...prod(env), devtool: false, cache: false });
