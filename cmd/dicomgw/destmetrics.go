package main

import (
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomgw/dicomgw/pkg/ledger"
)

// destinationCollector exports, per destination, what the ledger says
// waits for it: how many objects, and how old the oldest is; and how many
// of the objects still in the spool it could not deliver. The ledger is
// asked at most once per maxAge (a scrape, a dashboard refreshing). Every
// configured destination has its series, at 0 while nothing waits for it
// (names); one no longer configured keeps them while the ledger has
// objects for it.
type destinationCollector struct {
	led    *ledger.Ledger
	names  func() []string
	maxAge time.Duration

	pending, oldest, dead, scrapeErr *prometheus.Desc

	mu    sync.Mutex
	taken time.Time
	stats map[string]ledger.DestStats
	err   error
}

func newDestinationCollector(led *ledger.Ledger, names func() []string, maxAge time.Duration) *destinationCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &destinationCollector{
		led: led, names: names, maxAge: maxAge,
		pending:   d("dicomgw_destination_queued_objects", "Objects waiting to be delivered to the destination (in the spool, pending for it).", "destination"),
		oldest:    d("dicomgw_destination_oldest_queued_age_seconds", "Age of the oldest object waiting for the destination (0 when none).", "destination"),
		dead:      d("dicomgw_destination_dead_objects", "Objects in the spool the destination could not deliver: dead letters waiting for an operator to retry or purge them (as the ledger says; one purged leaves the count).", "destination"),
		scrapeErr: d("dicomgw_ledger_stats_error", "1 when the delivery ledger could not be read at the last scrape."),
	}
}

func (c *destinationCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.oldest, c.dead, c.scrapeErr} {
		ch <- d
	}
}

func (c *destinationCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if c.taken.IsZero() || time.Since(c.taken) > c.maxAge {
		c.stats, c.err = c.led.DestinationStats()
		c.taken = time.Now()
	}
	stats, err := c.stats, c.err
	c.mu.Unlock()
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(c.scrapeErr, prometheus.GaugeValue, failed)
	all := maps.Clone(stats)
	if all == nil {
		all = map[string]ledger.DestStats{}
	}
	for _, name := range c.names() {
		if _, ok := all[name]; !ok {
			all[name] = ledger.DestStats{}
		}
	}
	for name, s := range all {
		age := 0.0
		if s.Pending > 0 && !s.OldestPending.IsZero() {
			age = max(0, time.Since(s.OldestPending).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(s.Pending), name)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age, name)
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(s.Dead), name)
	}
}
