package forward

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsObserve(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := newMetrics(reg)
	objs := []*Object{{DataSize: 1000}, {DataSize: 2000}}
	m.observe(objs, []Result{{Outcome: Delivered, HTTPStatus: 202}, {Outcome: Dead, HTTPStatus: 202}}, 30*time.Millisecond)
	m.observe(objs, []Result{{Outcome: Retry}, {Outcome: Retry}}, time.Second)
	m.observe(objs[:1], []Result{{Outcome: Pause, HTTPStatus: 401}}, time.Millisecond)
	for _, c := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{m.requests.WithLabelValues("2xx", "partial"), 1},
		{m.requests.WithLabelValues("none", "retry"), 1},
		{m.requests.WithLabelValues("4xx", "pause"), 1},
		{m.instances.WithLabelValues("delivered"), 1},
		{m.instances.WithLabelValues("dead_lettered"), 1},
		{m.instances.WithLabelValues("retried"), 2},
		{m.instances.WithLabelValues("paused"), 1},
	} {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%v = %v, want %v", c.c, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.batchB); n != 1 {
		t.Errorf("batch bytes: %d series", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if got := testutil.ToFloat64(m.up); got != 0 {
		t.Errorf("up before New sets it: %v", got)
	}
}
