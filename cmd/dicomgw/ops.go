package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// opsMetrics are the metrics of the daemon itself (the packages register
// their own).
type opsMetrics struct {
	reloads    *prometheus.CounterVec
	lastReload prometheus.Gauge
}

// newRegistry returns the registry /metrics serves: the Go runtime and
// process collectors, build information and the daemon's own metrics.
func newRegistry() (*prometheus.Registry, *opsMetrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "dicomgw_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": runtime.Version()},
	})
	build.Set(1)
	m := &opsMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_config_reloads_total",
			Help: "Configuration reloads (SIGHUP), by result (success, failure).",
		}, []string{"result"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dicomgw_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully (start-up or reload), as a Unix time.",
		}),
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	m.lastReload.SetToCurrentTime()
	reg.MustRegister(build, m.reloads, m.lastReload)
	return reg, m
}

// readiness decides /readyz: the DICOM port is listening, the spool can
// commit an object (what a commit does, done with a probe file: a spool
// whose queue/ is not writable refuses every object), and it is below its
// high-water mark.
type readiness struct {
	listening atomic.Bool
	commit    func() error          // spool.Spool.CheckCommit
	full      func() (bool, string) // the spool above its high-water mark

	mu         sync.Mutex
	probed     time.Time
	probeErr   error
	probeEvery time.Duration
}

type check struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

func (r *readiness) checks() (bool, map[string]check) {
	out := map[string]check{"listening": {OK: r.listening.Load()}}
	if !r.listening.Load() {
		out["listening"] = check{Reason: "the DICOM port is not accepting associations (starting or shutting down)"}
	}
	r.mu.Lock()
	if time.Since(r.probed) > r.probeEvery {
		r.probeErr, r.probed = r.commit(), time.Now()
	}
	werr := r.probeErr
	r.mu.Unlock()
	if werr != nil {
		out["spool_writable"] = check{Reason: werr.Error()}
	} else {
		out["spool_writable"] = check{OK: true}
	}
	if full, why := r.full(); full {
		out["spool_capacity"] = check{Reason: why}
	} else {
		out["spool_capacity"] = check{OK: true}
	}
	ready := true
	for _, c := range out {
		ready = ready && c.OK
	}
	return ready, out
}

// opsHandler serves /metrics, /healthz and /readyz.
func opsHandler(reg *prometheus.Registry, ready *readiness) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, checks := ready.checks()
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ready": ok, "checks": checks})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// startOps serves the ops endpoints on addr until ctx ends.
func startOps(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (net.Addr, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics/health server failed", "err", err)
		}
	}()
	stop := func() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-done
	}
	return ln.Addr(), stop, nil
}
