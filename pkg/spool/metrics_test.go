package spool

import (
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCapacityCollector: the used bytes follow the objects, the limit is
// exported, and refusing turns 1 at the high-water mark.
func TestCapacityCollector(t *testing.T) {
	s := openLimited(t, t.TempDir(), Limits{MaxBytes: 100_000}, 0)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCapacityCollector(s))
	want := func(used int64, refusing float64) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
		}
		exp := map[string]float64{"dicomgw_spool_used_bytes": float64(used), "dicomgw_spool_limit_bytes": 100_000, "dicomgw_spool_refusing": refusing}
		if !maps.Equal(got, exp) {
			t.Errorf("gathered %v, want %v", got, exp)
		}
	}
	want(0, 0)
	w, err := s.Create(meta("1.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(dataSet(ctClass, "1.2.1", 20_000)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	used := s.Used()
	if used < 20_000 {
		t.Fatalf("used %d after a 20 kB object", used)
	}
	want(used, 0)
	w, err = s.Create(meta("1.2.2"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := w.Write(make([]byte, 96_000-int(used))); err != nil {
		t.Fatal(err)
	}
	want(s.Used(), 1)
}
