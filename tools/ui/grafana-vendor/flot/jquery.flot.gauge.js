// Stand-in for Grafana's own flot plugin jquery.flot.gauge.js, which is not on
// npm and not in Grafana's Go module zip. It registers nothing: the Angular
// graph panel that used it draws without this feature; the platform's
// dashboards use the React timeseries, stat and table panels.
