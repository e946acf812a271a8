package spool

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the spool's state at scrape time, from a StatsCache.
type Collector struct {
	cache                                    *StatsCache
	objects, bytes, retrying, oldest, fsFree *prometheus.Desc
	fsSize, incoming, scrapeErrors           *prometheus.Desc
}

// NewCollector returns a Collector reading cache.
func NewCollector(cache *StatsCache) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &Collector{
		cache:        cache,
		objects:      d("dicomgw_spool_objects", "Objects in the spool, by state (queued, dead, delivered).", "state"),
		bytes:        d("dicomgw_spool_bytes", "Bytes of the objects in the spool, by state.", "state"),
		retrying:     d("dicomgw_spool_retrying_objects", "Queued objects that have failed delivery at least once."),
		oldest:       d("dicomgw_spool_oldest_queued_age_seconds", "Age of the oldest queued object (0 when the queue is empty)."),
		incoming:     d("dicomgw_spool_incoming_objects", "Objects being received."),
		fsFree:       d("dicomgw_spool_filesystem_free_bytes", "Bytes available on the spool's file system."),
		fsSize:       d("dicomgw_spool_filesystem_size_bytes", "Size of the spool's file system."),
		scrapeErrors: d("dicomgw_spool_stats_error", "1 when the spool could not be listed at the last scrape."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.objects, c.bytes, c.retrying, c.oldest, c.incoming, c.fsFree, c.fsSize, c.scrapeErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.cache.Get()
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(c.scrapeErrors, prometheus.GaugeValue, failed)
	if err != nil {
		return
	}
	for _, st := range States {
		ss := s.States[st]
		ch <- prometheus.MustNewConstMetric(c.objects, prometheus.GaugeValue, float64(ss.Objects), string(st))
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(ss.Bytes), string(st))
	}
	age := 0.0
	if q := s.States[StateQueued]; !q.Oldest.IsZero() {
		age = max(0, time.Since(q.Oldest).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.retrying, prometheus.GaugeValue, float64(s.Retrying))
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(c.incoming, prometheus.GaugeValue, float64(s.Incoming))
	ch <- prometheus.MustNewConstMetric(c.fsFree, prometheus.GaugeValue, float64(s.FSFree))
	ch <- prometheus.MustNewConstMetric(c.fsSize, prometheus.GaugeValue, float64(s.FSSize))
}

// CapacityCollector exports what the spool holds against its limits, live
// (not from the listing cache): an alert can fire before the spool starts
// refusing objects.
type CapacityCollector struct {
	s                              *Spool
	used, limit, minFree, refusing *prometheus.Desc
}

// NewCapacityCollector returns a CapacityCollector for s.
func NewCapacityCollector(s *Spool) *CapacityCollector {
	return &CapacityCollector{
		s:        s,
		used:     prometheus.NewDesc("dicomgw_spool_used_bytes", "Bytes the spool holds in every state, objects being received included (what --spool-max-bytes limits).", nil, nil),
		limit:    prometheus.NewDesc("dicomgw_spool_limit_bytes", "The spool's limit (--spool-max-bytes); new objects are refused from 95% of it until it drains to 90%. Absent when there is no limit.", nil, nil),
		minFree:  prometheus.NewDesc("dicomgw_spool_min_free_bytes", "Free bytes to leave on the spool's file system (--spool-min-free). Absent when 0.", nil, nil),
		refusing: prometheus.NewDesc("dicomgw_spool_refusing", "1 while the spool refuses new objects (above its high-water mark or below the free-space floor).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *CapacityCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.used, c.limit, c.minFree, c.refusing} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *CapacityCollector) Collect(ch chan<- prometheus.Metric) {
	full, _ := c.s.Full()
	refusing := 0.0
	if full {
		refusing = 1
	}
	ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(c.s.Used()))
	ch <- prometheus.MustNewConstMetric(c.refusing, prometheus.GaugeValue, refusing)
	l := c.s.cap.limits
	if l.MaxBytes > 0 {
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(l.MaxBytes))
	}
	if l.MinFree > 0 {
		ch <- prometheus.MustNewConstMetric(c.minFree, prometheus.GaugeValue, float64(l.MinFree))
	}
}
