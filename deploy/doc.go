// Package deploy holds what is needed to run dicomgw somewhere other than
// a developer's shell, and the tests that keep it honest:
//
//	../Dockerfile           the container image (static binary on distroless, non-root)
//	healthcheck/            the image's HEALTHCHECK and preStop helper (no shell there)
//	etc/dicomgw.flags       /etc/dicomgw/dicomgw.flags of a server install and of the image
//	systemd/                the systemd unit
//	helm/dicomgw/           the Helm chart (StatefulSet, one spool per replica)
//	prometheus/             alerting rules and their promtool unit tests
//	grafana/                the dashboard
//	dicomgw.flags           the example flags file `make run` uses
//
// The tests (go test ./deploy/...; part of make test) run helm, promtool
// and systemd-analyze on these files, decode the chart's manifests strictly
// into the Kubernetes API types, check the rendered flags files with
// `dicomgw check-config`, and check that every metric the rules and the
// dashboard name is one a running gateway exports. Set
// DICOMGW_DEPLOY_TOOLS=required (make test does) to fail rather than skip
// when a tool is missing.
package deploy
