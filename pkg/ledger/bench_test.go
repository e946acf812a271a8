package ledger

import (
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// reportCommits adds the mean commit duration and operations per commit.
func reportCommits(b *testing.B, reg *prometheus.Registry) {
	commits := metric(b, reg, "dicomgw_ledger_commit_duration_seconds")
	if commits == 0 {
		return
	}
	b.ReportMetric(histogramSum(b, reg, "dicomgw_ledger_commit_duration_seconds")/commits*1e3, "ms/commit")
	b.ReportMetric(histogramSum(b, reg, "dicomgw_ledger_transaction_operations")/commits, "ops/commit")
}

// BenchmarkReceived: what the C-STORE path hands the ledger, one receipt
// with two destinations per object, until all is committed.
func BenchmarkReceived(b *testing.B) {
	reg := prometheus.NewPedanticRegistry()
	l, err := Open(Config{Path: filepath.Join(b.TempDir(), "ledger.db")}, nil, reg)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	objs := make([]Object, b.N)
	for i := range objs {
		objs[i] = obj(i, "1.2.3", "pacs", "research")
	}
	b.ResetTimer()
	start := time.Now()
	for i := range objs {
		l.Received(objs[i])
	}
	if err := l.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "received/s")
	reportCommits(b, reg)
}

// BenchmarkDeliveredConcurrent: 16 workers confirming deliveries, each
// waiting for its commit.
func BenchmarkDeliveredConcurrent(b *testing.B) {
	reg := prometheus.NewPedanticRegistry()
	l, err := Open(Config{Path: filepath.Join(b.TempDir(), "ledger.db")}, nil, reg)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ids := make([]string, b.N)
	for i := range ids {
		o := obj(i, "1.2.3", "pacs")
		ids[i] = o.ID
		l.Received(o)
	}
	if err := l.Sync(); err != nil {
		b.Fatal(err)
	}
	before := metric(b, reg, "dicomgw_ledger_commit_duration_seconds")
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ids)) {
					return
				}
				if err := l.Delivered(ids[i], "pacs", time.Now()); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "delivered/s")
	b.ReportMetric(float64(b.N)/(metric(b, reg, "dicomgw_ledger_commit_duration_seconds")-before), "ops/commit")
}
