package forward

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the forwarder's Prometheus metrics; every label has a closed
// set of values.
type metrics struct {
	requests  *prometheus.CounterVec // code_class, outcome
	instances *prometheus.CounterVec // outcome
	duration  prometheus.Histogram
	batchN    prometheus.Histogram
	batchB    prometheus.Histogram
	up        prometheus.Gauge
	pauses    *prometheus.CounterVec // cause
	filed     *prometheus.CounterVec // reason
}

// newMetrics makes a forwarder's metrics. A gateway with several
// destinations registers each forwarder's through a Registerer that adds
// the destination's name as a label (prometheus.WrapRegistererWith).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_forward_requests_total",
			Help: "Delivery requests (one per batch), by HTTP status class of the answer (2xx..5xx, none when there was no answer) and batch outcome (delivered, partial, retry, dead, pause, abandoned).",
		}, []string{"code_class", "outcome"}),
		instances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_forward_instances_total",
			Help: "Instances by the outcome of a delivery attempt: delivered, retried (a failed attempt, to be tried again), dead_lettered, paused (kept while the destination refuses), abandoned (shutdown).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dicomgw_forward_request_duration_seconds",
			Help:    "Time to deliver one batch (one STOW-RS request with its retries, or one archive filing).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12), // 5 ms .. ~5 min
		}),
		batchN: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dicomgw_forward_batch_instances",
			Help:    "Instances per delivery request.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500},
		}),
		batchB: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dicomgw_forward_batch_bytes",
			Help:    "Data set bytes per delivery request.",
			Buckets: prometheus.ExponentialBuckets(64<<10, 4, 10), // 64 KiB .. 16 GiB
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dicomgw_forward_destination_up",
			Help: "1 while the destination takes objects, 0 while it is paused (refusing for a reason an operator must fix: configuration, credentials).",
		}),
		filed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_archive_filed_apart_total",
			Help: "Objects the archive filed under a name other than their UIDs, by reason: no_study_instance_uid (_no-study-uid), no_series_instance_uid (_no-series-uid), duplicate_sop_instance_uid (a different object has its SOP Instance UID: <sop>+dup-<spool id>.dcm).",
		}, []string{"reason"}),
	}
	m.pauses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dicomgw_forward_pauses_total",
		Help: "Times the destination was paused (or stayed paused after a probe), by cause: not_dicom_answer (a 2xx that is not a DICOM STOW-RS response: a login page, a proxy), credentials (401 after a refresh, 403), redirect, client_error (400, 404, 415...), not_authorized (FailureReason 0124).",
	}, []string{"cause"})
	if reg != nil {
		reg.MustRegister(m.requests, m.instances, m.duration, m.batchN, m.batchB, m.up, m.pauses, m.filed)
	}
	for _, c := range Causes {
		m.pauses.WithLabelValues(c.String())
	}
	for _, l := range (FiledNoStudy | FiledNoSeries | FiledDuplicate).labels() {
		m.filed.WithLabelValues(l)
	}
	for _, o := range []string{"delivered", "retried", "dead_lettered", "paused", "abandoned"} {
		m.instances.WithLabelValues(o)
	}
	return m
}

// observe records one delivery request and what became of its objects.
func (m *metrics) observe(objs []*Object, results []Result, elapsed time.Duration) {
	var bytes int64
	for _, o := range objs {
		bytes += o.DataSize
	}
	m.duration.Observe(elapsed.Seconds())
	m.batchN.Observe(float64(len(objs)))
	m.batchB.Observe(float64(bytes))
	count := map[Outcome]int{}
	for _, r := range results {
		count[r.Outcome]++
		m.instances.WithLabelValues(instanceLabel(r.Outcome)).Inc()
	}
	outcome := "partial"
	for o, n := range count {
		if n == len(results) {
			outcome = o.String()
		}
	}
	class := "none"
	if len(results) > 0 && results[0].HTTPStatus >= 100 && results[0].HTTPStatus < 600 {
		class = string('0'+byte(results[0].HTTPStatus/100)) + "xx"
	}
	m.requests.WithLabelValues(class, outcome).Inc()
}

func instanceLabel(o Outcome) string {
	switch o {
	case Delivered:
		return "delivered"
	case Retry:
		return "retried"
	case Dead:
		return "dead_lettered"
	case Pause:
		return "paused"
	}
	return "abandoned"
}

// CredentialsCollector exports how long the upstream credentials have
// left, when that is known (an OAuth2 token, a bearer token that is a JWT),
// so that an alert can fire before a rotated token is forgotten.
type CredentialsCollector struct {
	creds Credentials
	desc  *prometheus.Desc
}

// NewCredentialsCollector returns a collector for c.
func NewCredentialsCollector(c Credentials) *CredentialsCollector {
	return &CredentialsCollector{creds: c, desc: prometheus.NewDesc("dicomgw_stow_credential_expiry_seconds",
		"Seconds until the STOW-RS credential expires (negative: expired); absent when the credential does not say.",
		nil, prometheus.Labels{"kind": c.Kind()})}
}

// Describe implements prometheus.Collector.
func (c *CredentialsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *CredentialsCollector) Collect(ch chan<- prometheus.Metric) {
	if exp, ok := c.creds.Expiry(); ok {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, time.Until(exp).Seconds())
	}
}
