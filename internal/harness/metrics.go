package harness

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Metrics is one scrape of a gateway's /metrics in the Prometheus text
// format, keyed by series exactly as written: the metric name followed by
// its labels, e.g. `dicomgw_associations_total{outcome="released"}`.
type Metrics map[string]float64

// Get returns the value of the series named name with exactly the given
// label pairs (written name="value", in any order); 0 when it is absent.
func (m Metrics) Get(name string, labels ...string) float64 {
	for k, v := range m {
		if seriesMatches(k, name, labels) {
			return v
		}
	}
	return 0
}

// Sum adds every series of metric name whose labels include all of labels.
func (m Metrics) Sum(name string, labels ...string) float64 {
	var sum float64
	for k, v := range m {
		n, ls := splitSeries(k)
		if n != name {
			continue
		}
		all := true
		for _, l := range labels {
			if !containsLabel(ls, l) {
				all = false
				break
			}
		}
		if all {
			sum += v
		}
	}
	return sum
}

func seriesMatches(series, name string, labels []string) bool {
	n, ls := splitSeries(series)
	if n != name || len(ls) != len(labels) {
		return false
	}
	for _, l := range labels {
		if !containsLabel(ls, l) {
			return false
		}
	}
	return true
}

func containsLabel(ls []string, l string) bool {
	for _, x := range ls {
		if x == l {
			return true
		}
	}
	return false
}

// splitSeries splits `name{a="1",b="2"}` into name and its label pairs.
// Label values the gateway writes hold no commas or braces.
func splitSeries(s string) (string, []string) {
	i := strings.IndexByte(s, '{')
	if i < 0 {
		return s, nil
	}
	inner := strings.TrimSuffix(s[i+1:], "}")
	if inner == "" {
		return s[:i], nil
	}
	return s[:i], strings.Split(inner, ",")
}

// ParseMetrics reads the Prometheus text exposition format (comments
// skipped, no timestamps expected).
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics line without a value: %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// Scrape fetches and parses the gateway's /metrics.
func (g *Gateway) Scrape() (Metrics, error) {
	if g.MetricsAddr == "" {
		return nil, fmt.Errorf("the gateway serves no metrics")
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + g.MetricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// OpenFDs is how many file descriptors the gateway process has open
// (entries of /proc/<pid>/fd): sockets it has not closed show here.
func (p *Process) OpenFDs() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.PID()))
	return len(ents), err
}
