package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomgw/dicomgw/pkg/ledger"
)

// commitMetrics are storage commitment's metrics.
type commitMetrics struct {
	requests       *prometheus.CounterVec
	reports        *prometheus.CounterVec
	instances      *prometheus.CounterVec
	reportFailures prometheus.Counter
	abandoned      prometheus.Counter

	source    func() map[string]openStat // the manager's open requests
	openDesc  *prometheus.Desc
	oldestDsc *prometheus.Desc
}

type openStat struct {
	n      int
	oldest time.Duration
}

func newCommitMetrics(reg prometheus.Registerer) *commitMetrics {
	m := &commitMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_commitment_requests_total",
			Help: "Storage commitment requests (N-ACTION) by outcome: accepted; refused (the calling AE title has no --remote-ae, so a report could not reach it); malformed (the data set); failed (it could not be recorded).",
		}, []string{"outcome"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_commitment_reports_total",
			Help: "Storage commitment reports (N-EVENT-REPORT) the requester acknowledged, by result (success: every instance committed; failures: some not) and via (same: the requester's association; new: one the gateway opened).",
		}, []string{"result", "via"}),
		instances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_commitment_instances_total",
			Help: "Instances in acknowledged storage commitment reports, by result: committed, no_such_instance (0112: never received), processing_failure (0110: dead-lettered or not delivered in time), class_instance_conflict (0119).",
		}, []string{"result"}),
		reportFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_commitment_report_failures_total",
			Help: "Attempts to send a storage commitment report that failed; each is tried again with backoff.",
		}),
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_commitment_reports_abandoned_total",
			Help: "Storage commitment reports given up after failing for 24h: the requester was never told.",
		}),
		openDesc: prometheus.NewDesc("dicomgw_commitment_open_requests",
			"Storage commitment requests not reported yet, by state: waiting (instances not all settled), reporting (answer decided, report not yet acknowledged).",
			[]string{"state"}, nil),
		oldestDsc: prometheus.NewDesc("dicomgw_commitment_oldest_open_seconds",
			"Age of the oldest open storage commitment request in each state (waiting: since requested; reporting: since decided); 0 when none.",
			[]string{"state"}, nil),
	}
	for _, o := range []string{"accepted", "refused", "malformed", "failed"} {
		m.requests.WithLabelValues(o)
	}
	for _, r := range []string{"success", "failures"} {
		for _, v := range []string{"same", "new"} {
			m.reports.WithLabelValues(r, v)
		}
	}
	for _, r := range []string{"committed", "no_such_instance", "processing_failure", "class_instance_conflict"} {
		m.instances.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.reports, m.instances, m.reportFailures, m.abandoned, m)
	}
	return m
}

func (m *commitMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.openDesc
	ch <- m.oldestDsc
}

func (m *commitMetrics) Collect(ch chan<- prometheus.Metric) {
	stats := map[string]openStat{ledger.CommitWaiting: {}, ledger.CommitReporting: {}}
	if m.source != nil {
		stats = m.source()
	}
	for state, s := range stats {
		ch <- prometheus.MustNewConstMetric(m.openDesc, prometheus.GaugeValue, float64(s.n), state)
		ch <- prometheus.MustNewConstMetric(m.oldestDsc, prometheus.GaugeValue, s.oldest.Seconds(), state)
	}
}
