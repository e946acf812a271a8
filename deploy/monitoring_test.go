package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/forward"
	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

const (
	rulesFile     = "deploy/prometheus/dicomgw-rules.yml"
	rulesTestFile = "deploy/prometheus/dicomgw-rules.test.yml"
	dashboardFile = "deploy/grafana/dicomgw-dashboard.json"
)

// TestAlertRules: promtool accepts the rules, and their unit tests (an
// alert fires when it should, with the annotations it should, and not when
// it should not) pass.
func TestAlertRules(t *testing.T) {
	promtool := promtoolTool(t)
	mustRun(t, repo, promtool, "check", "rules", path(rulesFile))
	mustRun(t, filepath.Dir(path(rulesTestFile)), promtool, "test", "rules", filepath.Base(rulesTestFile))
	for _, r := range alertRules(t) {
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("alert %s: wants a severity label and summary and description annotations", r.Alert)
		}
	}
}

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func alertRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(path(rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatal(err)
	}
	var out []rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// dashboard is the part of a Grafana dashboard the tests look at.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Schema     int     `json:"schemaVersion"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(path(dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// dashboardExprs are the PromQL expressions of every panel.
func (d dashboard) exprs() map[string]string {
	out := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out[fmt.Sprintf("%s/%s", p.Title, tg.RefID)] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// perDestination matches the metrics that carry a destination label.
var perDestination = regexp.MustCompile(`\bdicomgw_(forward|destination|archive)_`)

// TestDashboard: the dashboard is well-formed for Grafana (unique panel
// IDs, panels on the 24-column grid without overlaps, a data source
// variable every panel uses, job, instance and destination variables, the
// per-destination metrics filtered by destination), and each of its
// queries is valid PromQL (promtool checks them as recording rules).
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || d.Schema < 36 {
		t.Errorf("uid %q title %q schemaVersion %d", d.UID, d.Title, d.Schema)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["job"] != "query" || vars["instance"] != "query" || vars["destination"] != "query" {
		t.Errorf("template variables %v: want datasource, job, instance, destination", vars)
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("panel %q: id %d missing or not unique", p.Title, p.ID)
			}
			ids[p.ID] = true
			g := p.GridPos
			if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("panel %q: gridPos %+v off the 24-column grid", p.Title, g)
			}
			for x := g.X; x < g.X+g.W; x++ {
				for y := g.Y; y < g.Y+g.H; y++ {
					if other, ok := used[cell{x, y}]; ok {
						t.Errorf("panels %q and %q overlap at %d,%d", other, p.Title, x, y)
					}
					used[cell{x, y}] = p.Title
				}
			}
			if p.Type != "row" {
				if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q: data source %+v, want ${datasource}", p.Title, p.Datasource)
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
			}
			for _, tg := range p.Targets {
				if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
					t.Errorf("panel %q: query %q ignores the instance variable", p.Title, tg.Expr)
				}
				// Metrics per destination are shown per destination, and
				// the destination variable selects which.
				if perDestination.MatchString(tg.Expr) && !strings.Contains(tg.Expr, `destination=~"$destination"`) {
					t.Errorf("panel %q: query %q of a per-destination metric ignores the destination variable", p.Title, tg.Expr)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)

	promtool := promtoolTool(t)
	var rules []map[string]string
	keys := slices.Sorted(mapsKeys(d.exprs()))
	for i, k := range keys {
		rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard:query_%d", i), "expr": grafanaToPromQL(d.exprs()[k])})
	}
	b, _ := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	f := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	os.WriteFile(f, b, 0o644)
	if out, errOut, err := run(t, repo, promtool, "check", "rules", f); err != nil {
		t.Errorf("dashboard queries are not valid PromQL: %v\n%s%s", err, out, errOut)
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// grafanaToPromQL replaces Grafana's variables by what they stand for.
func grafanaToPromQL(expr string) string {
	return strings.NewReplacer("$__rate_interval", "1m", "$__range", "1h", "$__interval", "30s", "$job", ".*", "$instance", ".*", "$destination", ".*").Replace(expr)
}

// TestMetricsExist: every metric the alert rules and the dashboard name is
// one that dicomgw exports, with the labels they select on, and label
// values that exist. Two real gateways are scraped after some traffic: one
// receiving (a store, association rejections, an abort, a failed delivery
// so that the forwarding metrics appear), one with a JWT bearer token
// (dicomgw_stow_credential_expiry_seconds exists only when the credential
// says when it expires) that refuses an association without a user
// identity. Histograms count with their _bucket, _sum and _count series.
func TestMetricsExist(t *testing.T) {
	families := scrapeGateways(t)

	used := map[string][]string{} // metric -> where
	var selectors []selector
	for _, r := range alertRules(t) {
		for _, name := range metricNames(r.Expr) {
			used[name] = append(used[name], "rule "+r.Alert)
		}
		selectors = append(selectors, parseSelectors(r.Expr, "rule "+r.Alert)...)
	}
	for where, expr := range readDashboard(t).exprs() {
		for _, name := range metricNames(expr) {
			used[name] = append(used[name], "dashboard "+where)
		}
		selectors = append(selectors, parseSelectors(expr, "dashboard "+where)...)
	}
	if len(used) < 20 {
		t.Fatalf("only %d metric names found in the rules and the dashboard: is the extraction broken?", len(used))
	}
	for _, name := range slices.Sorted(mapsKeys(used)) {
		if _, ok := series(families, name); !ok {
			t.Errorf("%s (in %s) is not exported by dicomgw", name, strings.Join(used[name], ", "))
		}
	}
	// The labels an aggregation keeps (sum by (job, instance, destination)
	// (rate(m[5m]))) must be labels of the metric it aggregates: otherwise
	// the alert fires with the label empty, "objects were dead-lettered
	// for " and nothing to tell destinations apart.
	for _, r := range alertRules(t) {
		for _, g := range groupings(r.Expr) {
			fam, ok := series(families, g.metric)
			if !ok {
				continue // reported above
			}
			has := map[string]bool{}
			for _, m := range fam.GetMetric() {
				for _, lp := range m.GetLabel() {
					has[lp.GetName()] = true
				}
			}
			for _, l := range g.labels {
				if l != "job" && l != "instance" && !has[l] {
					t.Errorf("rule %s: aggregates %s by %q, a label it does not have (it has %v)", r.Alert, g.metric, l, slices.Sorted(mapsKeys(has)))
				}
			}
		}
	}
	known := knownLabelValues()
	for _, s := range selectors {
		fam, ok := series(families, s.metric)
		if !ok {
			continue // reported above
		}
		labelValues := map[string]map[string]bool{}
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labelValues[lp.GetName()] == nil {
					labelValues[lp.GetName()] = map[string]bool{}
				}
				labelValues[lp.GetName()][lp.GetValue()] = true
			}
		}
		if strings.HasSuffix(s.metric, "_bucket") {
			labelValues["le"] = map[string]bool{}
		}
		for _, m := range s.matchers {
			if m.label == "job" || m.label == "instance" || m.label == "__name__" {
				continue // target labels, added by Prometheus
			}
			vals, ok := labelValues[m.label]
			if !ok {
				t.Errorf("%s: %s has no label %q (it has %v)", s.where, s.metric, m.label, slices.Sorted(mapsKeys(labelValues)))
				continue
			}
			for _, want := range m.values() {
				if !vals[want] && !known[s.metric+" "+m.label][want] {
					t.Errorf("%s: %s{%s%s%q}: no series has %s=%q (seen: %v)", s.where, s.metric, m.label, m.op, m.value, m.label, want, slices.Sorted(mapsKeys(vals)))
				}
			}
		}
	}
}

// series finds the family a metric name belongs to: the name itself, or a
// histogram's or summary's _bucket, _sum, _count series.
func series(families map[string]*dto.MetricFamily, name string) (*dto.MetricFamily, bool) {
	if f, ok := families[name]; ok {
		return f, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if f, ok := families[base]; ok && (f.GetType() == dto.MetricType_HISTOGRAM || (suffix != "_bucket" && f.GetType() == dto.MetricType_SUMMARY)) {
			return f, true
		}
	}
	return nil, false
}

var (
	quoted     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	selectorRE = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$`)
)

// metricNames are the metric names in a PromQL expression: identifiers of
// dicomgw's own metrics, of the Go and process collectors it registers,
// and up (the scrape itself; not checked against the scrape). Quoted
// strings are ignored.
func metricNames(expr string) []string {
	var out []string
	for _, id := range identifier.FindAllString(quoted.ReplaceAllString(expr, `""`), -1) {
		if strings.HasPrefix(id, "dicomgw_") || strings.HasPrefix(id, "go_") || strings.HasPrefix(id, "process_") {
			out = append(out, id)
		}
	}
	return out
}

// groupingRE finds "by (labels) (" followed by an optional function call
// and the metric aggregated: sum by (a, b) (increase(metric{...}[5m])).
var groupingRE = regexp.MustCompile(`\bby\s*\(([^)]*)\)\s*\(\s*(?:[a-z_]+\s*\(\s*)?([a-zA-Z_:][a-zA-Z0-9_:]*)`)

type grouping struct {
	metric string
	labels []string
}

// groupings are the aggregations by labels of one metric in an expression.
func groupings(expr string) []grouping {
	var out []grouping
	for _, m := range groupingRE.FindAllStringSubmatch(expr, -1) {
		g := grouping{metric: m[2]}
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				g.labels = append(g.labels, l)
			}
		}
		out = append(out, g)
	}
	return out
}

type matcher struct{ label, op, value string }

// values are the label values a matcher names: its value, or the
// alternatives of a plain a|b|c regular expression (others are not
// checked).
func (m matcher) values() []string {
	if m.op == "=~" || m.op == "!~" {
		if !regexp.MustCompile(`^[A-Za-z0-9_\-.|]+$`).MatchString(m.value) || strings.Contains(m.value, ".*") {
			return nil
		}
		return strings.Split(m.value, "|")
	}
	return []string{m.value}
}

type selector struct {
	where, metric string
	matchers      []matcher
}

func parseSelectors(expr, where string) []selector {
	var out []selector
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		if !strings.HasPrefix(m[1], "dicomgw_") {
			continue
		}
		s := selector{where: where, metric: m[1]}
		for _, part := range strings.Split(m[2], ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			mm := matcherRE.FindStringSubmatch(part)
			if mm == nil {
				s.matchers = append(s.matchers, matcher{label: "?", op: "?", value: part})
				continue
			}
			s.matchers = append(s.matchers, matcher{mm[1], mm[2], mm[3]})
		}
		out = append(out, s)
	}
	return out
}

// knownLabelValues are label values that exist in dicomgw's code but need
// events the scrape test does not cause (a full spool, every failure
// kind), from the code's own tables where it exports them.
func knownLabelValues() map[string]map[string]bool {
	k := map[string]map[string]bool{}
	add := func(key string, vals ...string) {
		if k[key] == nil {
			k[key] = map[string]bool{}
		}
		for _, v := range vals {
			k[key][v] = true
		}
	}
	// A-ASSOCIATE-RJ reasons (PS3.8 Table 9-21), as pdu names them.
	for _, s := range []pdu.RejectSource{pdu.RejectSourceUser, pdu.RejectSourceProviderACSE, pdu.RejectSourceProviderPresent} {
		for r := pdu.RejectReason(1); r <= 7; r++ {
			if n := pdu.RejectReasonString(s, r); !strings.HasPrefix(n, "reason(") {
				add("dicomgw_associations_rejected_total reason", n)
			}
		}
	}
	for o := forward.Delivered; o <= forward.Abandoned; o++ {
		add("dicomgw_forward_requests_total outcome", o.String())
	}
	add("dicomgw_forward_requests_total outcome", "partial")
	add("dicomgw_forward_requests_total code_class", "1xx", "2xx", "3xx", "4xx", "5xx", "none")
	add("dicomgw_stow_credential_expiry_seconds kind", (&forward.TokenFile{}).Kind(), (&forward.BasicFile{}).Kind(), (&forward.OAuth2{}).Kind())
	// pkg/dimse/metrics.go authReasons.
	add("dicomgw_user_identity_failures_total reason", "missing", "bad-credentials", "insecure-transport", "unsupported-type", "expired", "invalid-token", "refused")
	return k
}

// scrapeGateways runs two gateways, makes some traffic, and returns the
// union of their metric families.
func scrapeGateways(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	// An endpoint that is down for an hour: every delivery is retried later.
	var posts atomic.Int64
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		posts.Add(1)
		w.Header().Set("Retry-After", "3600")
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	}))
	defer down.Close()

	dir := t.TempDir()
	secretFiles := writeSecretFiles(t)
	a := startGateway(t, filepath.Join(dir, "a"), "--stow-url", down.URL+"/dicom-web", "--max-associations", "1", "--retry-min", "1h", "--retry-max", "2h", "--spool-max-bytes", "10GB",
		"--qr-destination", "default", // the query/retrieve metrics exist only with it
		"--console-listen", "127.0.0.1:0", "--console-users-file", filepath.Join(secretFiles, "console-users", "users")) // and the console's with a console
	ctx := context.Background()
	sop, inst := "1.2.840.10008.5.1.4.1.1.7", harness.NewUID()
	storeCtx := dimse.ProposedContext{AbstractSyntax: sop, TransferSyntaxes: []string{uid.ExplicitVRLittleEndian}}
	echoCtx := dimse.ProposedContext{AbstractSyntax: uid.Verification, TransferSyntaxes: []string{uid.ImplicitVRLittleEndian}}
	c, err := dimse.Dial(ctx, a.Addr, dimse.DialConfig{CallingAE: "SCU", CalledAE: "DICOMGW", Contexts: []dimse.ProposedContext{storeCtx, echoCtx}})
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := c.Store(sop, inst, uid.ExplicitVRLittleEndian, bytes.NewReader(dataSet(sop, inst)))
	if err != nil || rsp.Status != dimse.StatusSuccess {
		t.Fatalf("C-STORE: %v %v", rsp, err)
	}
	if st, err := c.Echo(); err != nil || st != dimse.StatusSuccess {
		t.Fatalf("C-ECHO: %v %v", st, err)
	}
	// A second association while the first holds the only slot: 2/3/2.
	if c2, err := dimse.Dial(ctx, a.Addr, dimse.DialConfig{CallingAE: "SCU", CalledAE: "DICOMGW", Contexts: []dimse.ProposedContext{echoCtx}}); err == nil {
		c2.Close()
		t.Fatal("second association accepted with --max-associations 1")
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	// A wrong called AE title (1/1/7), and an association the peer aborts.
	if c3, err := dimse.Dial(ctx, a.Addr, dimse.DialConfig{CallingAE: "SCU", CalledAE: "NOTUS", Contexts: []dimse.ProposedContext{echoCtx}}); err == nil {
		c3.Close()
		t.Fatal("association to a wrong AE title accepted")
	}
	c4, err := dimse.Dial(ctx, a.Addr, dimse.DialConfig{CallingAE: "SCU", CalledAE: "DICOMGW", Contexts: []dimse.ProposedContext{echoCtx}})
	if err != nil {
		t.Fatal(err)
	}
	c4.Abort()

	// A gateway with a bearer token that is a JWT, requiring user
	// identities: an association without one is refused (1/1/1).
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(testJWT(time.Now().Add(48*time.Hour))), 0o600)
	usersFile := filepath.Join(secretFiles, "users", "users")
	b := startGateway(t, filepath.Join(dir, "b"), "--stow-url", down.URL+"/dicom-web", "--stow-token-file", tokenFile,
		"--users-file", usersFile, "--require-user-identity")
	if c5, err := dimse.Dial(ctx, b.Addr, dimse.DialConfig{CallingAE: "SCU", CalledAE: "DICOMGW", Contexts: []dimse.ProposedContext{echoCtx}}); err == nil {
		c5.Close()
		t.Fatal("association without a user identity accepted with --require-user-identity")
	}

	// The delivery attempt is made after --batch-linger; wait for it.
	families := map[string]*dto.MetricFamily{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		clear(families)
		for _, g := range []*harness.Gateway{a, b} {
			for name, f := range scrape(t, g) {
				if prev, ok := families[name]; ok {
					prev.Metric = append(prev.Metric, f.Metric...)
				} else {
					families[name] = f
				}
			}
		}
		if _, ok := families["dicomgw_forward_requests_total"]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no delivery attempt after 30s (%d POSTs); metrics: %v", posts.Load(), slices.Sorted(mapsKeys(families)))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return families
}

// startGateway runs dicomgw and stops it when the test ends.
func startGateway(t *testing.T, spool string, args ...string) *harness.Gateway {
	t.Helper()
	g, err := harness.Start(spool, append([]string{"--spool-min-free", "0"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Stop(20 * time.Second); err != nil {
			t.Errorf("dicomgw did not stop cleanly: %v", err)
		}
		if t.Failed() {
			t.Logf("dicomgw log (end):\n%s", harness.Tail(g.Logs(), 6000))
		}
	})
	return g
}

func scrape(t *testing.T, g *harness.Gateway) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + g.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// dataSet is a minimal Explicit VR Little Endian data set of sop/inst.
func dataSet(sop, inst string) []byte {
	var e harness.Elements
	e.Str(0x0008, 0x0016, "UI", sop)
	e.Str(0x0008, 0x0018, "UI", inst)
	e.Str(0x0008, 0x0060, "CS", "OT")
	e.Str(0x0010, 0x0010, "PN", "DEPLOY^TEST")
	e.Str(0x0020, 0x000D, "UI", harness.NewUID())
	e.Str(0x0020, 0x000E, "UI", harness.NewUID())
	return e
}
