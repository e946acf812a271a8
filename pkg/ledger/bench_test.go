package ledger

import (
	"path/filepath"
	"strconv"
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

// BenchmarkConsoleReads: what the console's pages ask of a ledger of
// 100,000 objects, 1,000 of them dead letters and 10,000 of them purged
// dead letters: the dead letters (the dead letters page), the per
// destination counts (the overview's metrics) and a study (Find).
func BenchmarkConsoleReads(b *testing.B) {
	l, err := Open(Config{Path: filepath.Join(b.TempDir(), "ledger.db")}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	const n = 100000
	for i := range n {
		o := obj(i, "1.2.3."+strconv.Itoa(i/100), "pacs", "research")
		l.Received(o)
		switch {
		case i%100 == 0:
			l.Dead(o.ID, "pacs", "refused", base.Add(time.Duration(i)))
		case i%10 == 1:
			l.Dead(o.ID, "pacs", "refused", base.Add(time.Duration(i)))
			l.Gone(o.ID, base.Add(time.Duration(i)))
		default:
			l.Delivered(o.ID, "pacs", base)
		}
	}
	if err := l.Sync(); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		run  func() (int, error)
	}{
		{"dead letters", func() (int, error) { d, err := l.DeadLetters("", 1000); return len(d), err }},
		{"destination stats", func() (int, error) { s, err := l.DestinationStats(); return s["pacs"].Dead, err }},
		{"find a study", func() (int, error) {
			o, err := l.Trace(Query{StudyInstanceUID: "1.2.3.42", Limit: 201})
			return len(o), err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if k, err := c.run(); err != nil || k == 0 {
					b.Fatal(k, err)
				}
			}
		})
	}
}
