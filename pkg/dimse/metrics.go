package dimse

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// metrics are the server's Prometheus metrics. Every label has a bounded set
// of values: calling AE titles appear only when they are on the allowlist
// (the rest are "other"), statuses and reasons come from closed sets.
type metrics struct {
	active   prometheus.Gauge
	ended    *prometheus.CounterVec // outcome
	rejected *prometheus.CounterVec // reason
	aborted  *prometheus.CounterVec // source, reason
	requests *prometheus.CounterVec // command, status, calling_ae
	bytes    prometheus.Counter
	storeDur *prometheus.HistogramVec // calling_ae
	refused  *prometheus.CounterVec   // reason

	tlsFailures   prometheus.Counter
	authFailures  *prometheus.CounterVec // reason
	nonconforming *prometheus.CounterVec // attribute
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dicomgw_associations_active",
			Help: "Associations established and not yet ended.",
		}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_associations_total",
			Help: "Connections served to their end, by outcome (released, rejected, peer-aborted, protocol-error, idle-timeout, shutdown, artim-expired, connection-lost).",
		}, []string{"outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_associations_rejected_total",
			Help: "A-ASSOCIATE-RJ sent, by reason (PS3.8 Table 9-21).",
		}, []string{"reason"}),
		aborted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_associations_aborted_total",
			Help: "Associations aborted, by who aborted (peer or local) and why.",
		}, []string{"source", "reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_dimse_requests_total",
			Help: "DIMSE requests answered, by command, response status and calling AE (allowlisted titles only, else other).",
		}, []string{"command", "status", "calling_ae"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_received_bytes_total",
			Help: "Data set bytes received in C-STORE requests.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_connections_refused_total",
			Help: "TCP connections closed at once, by reason: total (--max-connections were open), per_host (the peer's address held --max-connections-per-host).",
		}, []string{"reason"}),
		tlsFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_tls_handshake_failures_total",
			Help: "TLS handshakes that failed on the DICOM TLS port (no or untrusted client certificate, plaintext on the TLS port, protocol mismatch); a connection that sends nothing (a TCP check) attempted none.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_user_identity_failures_total",
			Help: "Associations refused (A-ASSOCIATE-RJ 1/1/1) for their user identity, by reason (missing, bad-credentials, insecure-transport, unsupported-type, expired, invalid-token, refused).",
		}, []string{"reason"}),
		nonconforming: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_nonconforming_uids_total",
			Help: "UIDs that break PS3.5 9.1 (hexadecimal, leading zeros, empty components...) in objects stored under --uid-policy lenient, by attribute (sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid).",
		}, []string{"attribute"}),
		storeDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dicomgw_cstore_duration_seconds",
			Help:    "Time from a C-STORE request's command to its object being durable in the spool (successful stores).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14), // 0.5 ms .. ~75 s
		}, []string{"calling_ae"}),
	}
	if reg != nil {
		reg.MustRegister(m.active, m.ended, m.rejected, m.aborted, m.requests, m.bytes, m.storeDur, m.refused, m.tlsFailures, m.authFailures, m.nonconforming)
	}
	for _, r := range []string{"total", "per_host"} {
		m.refused.WithLabelValues(r)
	}
	// Series that alerts and dashboards expect to exist from the start.
	for r := EndReleased; r <= EndConnectionLost; r++ {
		m.ended.WithLabelValues(r.String())
	}
	for _, a := range uid.Attributes() {
		m.nonconforming.WithLabelValues(a.Label())
	}
	for _, st := range []Status{StatusSuccess, StatusOutOfResources, StatusDataSetDoesNotMatchClass, StatusCannotUnderstand} {
		m.requests.WithLabelValues("C-STORE", statusLabel(st), "other")
	}
	return m
}

// statusLabel is a status as a label value: 0x0000, 0xA700, ...
func statusLabel(s Status) string { return fmt.Sprintf("0x%04X", uint16(s)) }

// commandLabel keeps the command label to a closed set.
func commandLabel(f CommandField) string {
	switch f {
	case CEchoRQ:
		return "C-ECHO"
	case CStoreRQ:
		return "C-STORE"
	case NActionRQ:
		return "N-ACTION"
	case CFindRQ:
		return "C-FIND"
	case CMoveRQ:
		return "C-MOVE"
	case CGetRQ:
		return "C-GET"
	}
	return "other"
}

// abortLabel names an abort reason, with unknown codes as "other".
func abortLabel(r pdu.AbortReason) string {
	switch r {
	case pdu.AbortNotSpecified, pdu.AbortUnrecognizedPDU, pdu.AbortUnexpectedPDU, pdu.AbortUnrecognizedPDUParameter,
		pdu.AbortUnexpectedPDUParameter, pdu.AbortInvalidPDUParameterValue:
		return r.String()
	}
	return "other"
}

// callingLabel is the calling AE as a label value.
func (a *assoc) callingLabel() string {
	if a.calling != "" && a.srv.policy.Load().Known(a.calling) {
		return a.calling
	}
	return "other"
}

// AuthReason is implemented by Authenticator errors that say, in a word
// from a closed set, why an identity was refused (for the metric label).
type AuthReason interface{ AuthReason() string }

var authReasons = map[string]bool{"missing": true, "bad-credentials": true, "insecure-transport": true,
	"unsupported-type": true, "expired": true, "invalid-token": true, "refused": true}

func authLabel(err error) string {
	if errors.Is(err, ErrNoIdentity) {
		return "missing"
	}
	var r AuthReason
	if errors.As(err, &r) && authReasons[r.AuthReason()] {
		return r.AuthReason()
	}
	return "refused"
}
