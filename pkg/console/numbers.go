package console

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The console shows the registry's numbers, never its own count of the
// same thing: a series is named on the page as /metrics names it
// (seriesKey), so that an operator, and the tests, can find one in the
// other.

// series are one gathering's values by series key.
type series map[string]float64

// seriesKey is a series as the text exposition format writes it:
// name{label="value",...}, labels sorted by name.
func seriesKey(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	type kv struct{ k, v string }
	var pairs []kv
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, kv{labels[i], labels[i+1]})
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].k < pairs[j].k })
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.k)
		b.WriteString(`="`)
		b.WriteString(escapeLabel(p.v))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// escapeLabel escapes a label value as the text format does.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func metricKey(name string, m *dto.Metric) string {
	var labels []string
	for _, l := range m.GetLabel() {
		labels = append(labels, l.GetName(), l.GetValue())
	}
	return seriesKey(name, labels...)
}

// flatten is every gauge, counter and untyped series of fams.
func flatten(fams []*dto.MetricFamily) series {
	out := series{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var v float64
			switch {
			case m.Gauge != nil:
				v = m.GetGauge().GetValue()
			case m.Counter != nil:
				v = m.GetCounter().GetValue()
			case m.Untyped != nil:
				v = m.GetUntyped().GetValue()
			default:
				continue
			}
			out[metricKey(f.GetName(), m)] = v
		}
	}
	return out
}

// counterSeries is the series of the named counter families.
func counterSeries(fams []*dto.MetricFamily, names ...string) series {
	out := series{}
	for _, f := range fams {
		if !slices.Contains(names, f.GetName()) {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.Counter != nil {
				out[metricKey(f.GetName(), m)] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// labelValues lists the values label takes in family name, sorted.
func labelValues(fams []*dto.MetricFamily, name, label string) []string {
	seen := map[string]bool{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					seen[l.GetValue()] = true
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// labelOf is the value of label on the series of family name whose other
// label match has value want ("" when there is none).
func labelOf(fams []*dto.MetricFamily, name, match, want, label string) string {
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var got, val string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case match:
					got = l.GetValue()
				case label:
					val = l.GetValue()
				}
			}
			if got == want {
				return val
			}
		}
	}
	return ""
}

// Num is one number on a page with the series it is.
type Num struct {
	Key     string  // the series, as /metrics names it
	Value   float64 // its value
	Present bool    // the registry has the series
}

func (s series) num(name string, labels ...string) Num {
	k := seriesKey(name, labels...)
	v, ok := s[k]
	return Num{Key: k, Value: v, Present: ok}
}

// Increase is how much a counter grew over a window: the last hour, or
// since the gateway started when that was less than an hour ago.
type Increase struct {
	Key    string // the counter, as /metrics names it
	Value  float64
	Window time.Duration // what it was counted over
}

// historyFamilies are the counters the console remembers, for "in the
// last hour".
var historyFamilies = []string{"dicomgw_forward_instances_total"}

// history keeps samples of counters, for their increase over a window
// without a Prometheus server.
type history struct {
	now  func() time.Time
	keep time.Duration

	mu      sync.Mutex
	samples []sample // oldest first
}

type sample struct {
	at time.Time
	v  series
}

func newHistory(now func() time.Time, keep time.Duration) *history {
	return &history{now: now, keep: keep}
}

func (h *history) add(v series) {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples = append(h.samples, sample{at: now, v: v})
	// The oldest sample kept is the newest one at least keep old: the
	// baseline of a window of keep.
	i := 0
	for i+1 < len(h.samples) && now.Sub(h.samples[i+1].at) >= h.keep {
		i++
	}
	h.samples = h.samples[i:]
}

// increase is how much the counter key grew from the baseline (the newest
// sample at least window old, else the oldest) to cur. A counter the
// baseline lacks started at 0 (a destination added since).
func (h *history) increase(key string, cur float64, window time.Duration) Increase {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.samples) == 0 {
		return Increase{Key: key, Value: cur}
	}
	base := h.samples[0]
	for _, s := range h.samples {
		if now.Sub(s.at) < window {
			break
		}
		base = s
	}
	d := cur - base.v[key]
	if d < 0 { // a counter reset cannot happen in one process; be safe
		d = cur
	}
	return Increase{Key: key, Value: d, Window: now.Sub(base.at)}
}

// formatting for the templates

func intString(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
