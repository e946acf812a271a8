package harness

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(`# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 12
dicomgw_associations_total{outcome="released"} 3
dicomgw_associations_total{outcome="peer-aborted"} 2
dicomgw_associations_aborted_total{reason="not-specified",source="peer"} 2
dicomgw_associations_aborted_total{reason="invalid-PDU-parameter-value",source="local"} 1
process_resident_memory_bytes 1.6384e+07
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		got, want float64
		what      string
	}{
		{m.Get("go_goroutines"), 12, "go_goroutines"},
		{m.Get("process_resident_memory_bytes"), 16384000, "RSS"},
		{m.Get("dicomgw_associations_total", `outcome="released"`), 3, "released"},
		{m.Get("dicomgw_associations_total"), 0, "no series without labels"},
		{m.Sum("dicomgw_associations_total"), 5, "sum"},
		{m.Sum("dicomgw_associations_aborted_total", `source="peer"`), 2, "sum by label"},
		{m.Get("dicomgw_associations_aborted_total", `source="local"`, `reason="invalid-PDU-parameter-value"`), 1, "labels in any order"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	if _, err := ParseMetrics(strings.NewReader("novalue\n")); err == nil {
		t.Error("a line without a value parsed")
	}
}
