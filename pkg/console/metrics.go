package console

import "github.com/prometheus/client_golang/prometheus"

// metrics are the console's own; every label has a closed set of values.
type metrics struct {
	logins   *prometheus.CounterVec // outcome
	actions  *prometheus.CounterVec // action, outcome
	refused  *prometheus.CounterVec // reason
	sessions prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_console_logins_total",
			Help: "Console logins by outcome: success, failure (unknown user or wrong password), throttled (too many failures from the address), refused (the form's token did not match).",
		}, []string{"outcome"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_console_actions_total",
			Help: "Dead letters acted on from the console, by action (retry, purge) and outcome (done, failed).",
		}, []string{"action", "outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_console_refused_total",
			Help: "Console actions refused, by reason: no_session, csrf (token missing or wrong), cross_site, bad_form.",
		}, []string{"reason"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dicomgw_console_sessions",
			Help: "Console sessions in force (as of the last login, logout or sweep).",
		}),
	}
	for _, o := range []string{"success", "failure", "throttled", "refused"} {
		m.logins.WithLabelValues(o)
	}
	for _, a := range []string{"retry", "purge"} {
		for _, o := range []string{"done", "failed"} {
			m.actions.WithLabelValues(a, o)
		}
	}
	for _, r := range []string{"no_session", "csrf", "cross_site", "bad_form"} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.logins, m.actions, m.refused, m.sessions)
	}
	return m
}
