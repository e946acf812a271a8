package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// getURL fetches a URL and returns status and body.
func getURL(t testing.TB, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestMetricsScrape: a real scrape after real traffic (stores, a
// rejection, an abort) passes `promtool check metrics`, and carries the
// metrics the operators' alerts use.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	promtool := needTool(t, "promtool")
	spoolDir, archive := t.TempDir(), t.TempDir()
	g := startGateway(t, spoolDir, "--archive-dir", archive, "--calling-ae", "OPS1")
	storeAll(t, g.Addr, "OPS1", studyObjects(t, t.TempDir(), 3, 4096))
	var rj *dimse.RejectedError
	if _, err := dialErr(g.Addr, "STRANGER", "DICOMGW", storeContext(sopSecondaryCapture, tsExplicitLE)); !errors.As(err, &rj) {
		t.Fatalf("a calling AE off the allowlist: %v", err)
	}
	raw, err := net.Dial("tcp", g.Addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	raw.Close()
	waitDrained(t, g, 30*time.Second)

	code, body := getURL(t, "http://"+g.MetricsAddr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	for _, want := range []string{
		`dicomgw_dimse_requests_total{calling_ae="OPS1",command="C-STORE",status="0x0000"} 3`,
		`dicomgw_associations_rejected_total{reason="calling-AE-title-not-recognized"} 1`,
		`dicomgw_forward_instances_total{destination="default",outcome="delivered"} 3`,
		`dicomgw_forward_destination_up{destination="default"} 1`,
		`dicomgw_destination_info{destination="default",kind="archive"} 1`,
		`dicomgw_destination_queued_objects{destination="default"} 0`,
		`dicomgw_spool_objects{state="queued"}`,
		`dicomgw_spool_filesystem_free_bytes`,
		`dicomgw_cstore_duration_seconds_count{calling_ae="OPS1"} 3`,
		`dicomgw_build_info{`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if bytes.Contains(body, []byte(`calling_ae="STRANGER"`)) {
		t.Error("an unlisted calling AE became a label value")
	}
	if code, body := getURL(t, "http://"+g.MetricsAddr+"/healthz"); code != http.StatusOK || !bytes.Contains(body, []byte(`"ok"`)) {
		t.Errorf("/healthz: %d %s", code, body)
	}
}

// TestPrometheusScrapesGateway: a real Prometheus server scrapes the
// gateway; the counters read back through its query API match what was
// sent.
func TestPrometheusScrapesGateway(t *testing.T) {
	t.Parallel()
	prom := needTool(t, "prometheus")
	storescu := needTool(t, "storescu")
	g := startGateway(t, t.TempDir(), "--archive-dir", t.TempDir())
	dir := t.TempDir()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: dicomgw
    static_configs:
      - targets: ["%s"]
`, g.MetricsAddr)), 0o644)
	p, err := harness.StartProcess(exec.Command(prom, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(port)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	promURL := "http://127.0.0.1:" + strconv.Itoa(port)
	if err := harness.WaitListening("127.0.0.1:"+strconv.Itoa(port), 30*time.Second, p.Exited()); err != nil {
		t.Fatalf("prometheus: %v\n%s", err, harness.Tail(p.Output(), 3000))
	}

	objs := studyObjects(t, t.TempDir(), 5, 2048)
	args := []string{"-aet", "PROMTEST", "-aec", "DICOMGW", g.Host(), g.Port()}
	for _, o := range objs {
		args = append(args, o.Path)
	}
	if res := harness.Run(t.Context(), time.Minute, storescu, args...); res.Code != 0 {
		t.Fatalf("storescu: %v", res)
	}

	query := func(q string) (float64, bool) {
		code, body := getURL(t, promURL+"/api/v1/query?query="+url.QueryEscape(q))
		if code != http.StatusOK {
			return 0, false
		}
		var r struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.Unmarshal(body, &r) != nil || len(r.Data.Result) != 1 {
			return 0, false
		}
		s, _ := r.Data.Result[0].Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		return v, err == nil
	}
	for q, want := range map[string]float64{
		`sum(dicomgw_dimse_requests_total{command="C-STORE",status="0x0000"})`: 5,
		`dicomgw_forward_instances_total{outcome="delivered"}`:                 5,
		`dicomgw_associations_total{outcome="released"}`:                       1,
		`up{job="dicomgw"}`:                    1,
		`dicomgw_received_bytes_total > 10000`: 1,
	} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			v, ok := query(q)
			if ok && (v == want || strings.Contains(q, ">") && v > 10000) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("Prometheus: %s = %v (%v), want %v", q, v, ok, want)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// readyz fetches /readyz.
func readyz(t testing.TB, g *harness.Gateway) (int, map[string]any) {
	t.Helper()
	code, body := getURL(t, "http://"+g.MetricsAddr+"/readyz")
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, m
}

func waitReady(t testing.TB, g *harness.Gateway, want int, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, m := readyz(t, g)
		if code == want {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz stayed %d (%v), want %d", code, m, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestReadyzHighWater: when the spool passes its high-water mark (the
// endpoint refusing, objects pile up), /readyz turns 503 with the reason,
// new associations get A-ASSOCIATE-RJ 2/3/1 and C-STOREs A700; once the
// objects are delivered and the spool below its low-water mark, all is
// back to normal by itself.
func TestReadyzHighWater(t *testing.T) {
	t.Parallel()
	var refuse = make(chan struct{})
	fake, srv := newSTOWFake(t, func(n int, sops []string) (int, string, map[string]uint16) {
		select {
		case <-refuse:
			return http.StatusOK, "", nil
		default:
			return http.StatusServiceUnavailable, "", nil
		}
	})
	g := startGateway(t, t.TempDir(), "--stow-url", srv.URL+"/dicom-web", "--spool-max-bytes", "200KB", "--spool-min-free", "0",
		"--retry-min", "200ms", "--retry-max", "500ms")
	waitReady(t, g, http.StatusOK, 10*time.Second)
	objs := studyObjects(t, t.TempDir(), 4, 64<<10)
	// Three objects of about 66 KB pass the high-water mark, 95% of 200 KB.
	c := dial(t, g.Addr, "FILLER", storeContext(sopSecondaryCapture, tsExplicitLE))
	for i, o := range objs {
		rsp, err := c.Store(sopSecondaryCapture, o.SOPInstanceUID, tsExplicitLE, bytes.NewReader(o.DataSet))
		if err != nil {
			t.Fatal(err)
		}
		want := dimse.StatusSuccess
		if i == 3 {
			want = dimse.StatusOutOfResources
		}
		if rsp.Status != want {
			t.Fatalf("object %d: %v (%s), want %v", i, rsp.Status, rsp.ErrorComment, want)
		}
		if i == 3 && !strings.Contains(rsp.ErrorComment, "spool full") {
			t.Errorf("A700 comment %q", rsp.ErrorComment)
		}
	}
	c.Release()
	m := waitReady(t, g, http.StatusServiceUnavailable, 10*time.Second)
	checks, _ := m["checks"].(map[string]any)
	capacity, _ := checks["spool_capacity"].(map[string]any)
	if reason, _ := capacity["reason"].(string); !strings.Contains(reason, "--spool-max-bytes") {
		t.Errorf("capacity check: %v", checks)
	}
	_, err := dialErr(g.Addr, "FILLER", "DICOMGW", storeContext(sopSecondaryCapture, tsExplicitLE))
	var rj *dimse.RejectedError
	if !errors.As(err, &rj) || rj.Result != pdu.RejectTransient || rj.Source != pdu.RejectSourceProviderPresent || rj.Reason != pdu.RejectTemporaryCongestion {
		t.Errorf("association while full: %v, want A-ASSOCIATE-RJ 2/3/1", err)
	}
	close(refuse)
	waitReady(t, g, http.StatusOK, 30*time.Second)
	// Ready again once below the low-water mark: the last delivery may
	// still be on its way.
	waitDrained(t, g, 30*time.Second)
	if _, stored := fake.snapshot(); len(stored) != 3 {
		t.Errorf("%d objects delivered, want 3", len(stored))
	}
	storeAll(t, g.Addr, "FILLER", objs[3:])
}

// TestReloadOnSIGHUP: SIGHUP re-reads the flags file; new AE titles and
// calling AE allowlist apply to new associations while a running one
// carries on; a bad file keeps the old settings and says why.
func TestReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	flags := filepath.Join(t.TempDir(), "dicomgw.flags")
	write := func(s string) {
		if err := os.WriteFile(flags, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("--ae-title=GW1\n--calling-ae=CT1@127.0.0.1\n--max-associations=10\n")
	g := startGateway(t, t.TempDir(), "--archive-dir", t.TempDir(), "--flagfile", flags)
	echo := dimse.ProposedContext{AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{tsImplicitLE}}
	open, err := dialErr(g.Addr, "CT1", "GW1", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	write("# reloaded\n--ae-title=GW2\n--calling-ae=CT2\n--max-associations=20\n")
	g.Signal(syscall.SIGHUP)
	if _, err := g.WaitLog("config reloaded", 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if rec, err := g.WaitLog("flags changed that take effect only after a restart; ignored until then", 5*time.Second, nil); err != nil || rec["flags"] != "--max-associations" {
		t.Errorf("restart-only change not reported: %v %v", rec, err)
	}
	if st, err := open.Echo(); err != nil || st != dimse.StatusSuccess {
		t.Errorf("the running association after reload: %v %v", st, err)
	}
	wantReject := func(calling, called string, reason pdu.RejectReason) {
		t.Helper()
		_, err := dialErr(g.Addr, calling, called, echo)
		var rj *dimse.RejectedError
		if !errors.As(err, &rj) || rj.Reason != reason || rj.Source != pdu.RejectSourceUser {
			t.Errorf("%s -> %s: %v, want reject reason %d", calling, called, err, reason)
		}
	}
	wantReject("CT1", "GW1", pdu.RejectCalledAENotRecognized)
	wantReject("CT1", "GW2", pdu.RejectCallingAENotRecognized)
	c, err := dialErr(g.Addr, "CT2", "GW2", echo)
	if err != nil {
		t.Fatalf("CT2 -> GW2 after reload: %v", err)
	}
	c.Release()

	write("--ae-title=GW3\n--ae-titel=TYPO\n")
	g.Signal(syscall.SIGHUP)
	rec, err := g.WaitLog("config reload failed; keeping the running settings", 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg, _ := rec["err"].(string); !strings.Contains(msg, "dicomgw.flags:2: unknown flag --ae-titel") {
		t.Errorf("reload error %q does not name the line", msg)
	}
	c, err = dialErr(g.Addr, "CT2", "GW2", echo)
	if err != nil {
		t.Fatalf("old settings not kept after a bad reload: %v", err)
	}
	c.Release()
	open.Release()
	_, body := getURL(t, "http://"+g.MetricsAddr+"/metrics")
	for _, want := range []string{`dicomgw_config_reloads_total{result="success"} 1`, `dicomgw_config_reloads_total{result="failure"} 1`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestShutdownDuringLargeTransfer: SIGTERM while a large object is coming
// in: the gateway stops taking associations, gives the transfer
// --shutdown-timeout, aborts it, exits 0; every object that got 0000 is
// still there after a restart and is delivered then.
func TestShutdownDuringLargeTransfer(t *testing.T) {
	t.Parallel()
	spoolDir, archive := t.TempDir(), t.TempDir()
	// An endpoint that is down: what was acknowledged stays queued.
	down := "http://127.0.0.1:9/dicom-web"
	g := startGateway(t, spoolDir, "--stow-url", down, "--shutdown-timeout", "1s", "--retry-min", "1h")
	small := studyObjects(t, t.TempDir(), 3, 4096)
	storeAll(t, g.Addr, "BEFORE", small)
	bigInst, release, done := stalledStore(t, g, "BIG")

	start := time.Now()
	g.Signal(syscall.SIGTERM)
	select {
	case <-g.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway did not exit")
	}
	if err := g.Err(); err != nil {
		t.Errorf("exit: %v, want status 0", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("shutdown took %v with --shutdown-timeout 1s", d)
	}
	if _, err := g.WaitLog("association ended", time.Second, func(m map[string]any) bool {
		return m["calling_ae"] == "BIG" && m["outcome"] == "shutdown"
	}); err != nil {
		t.Error(err)
	}
	// The sender, stuck mid data set, now finds its association gone.
	release()
	deliveredAfterRestart(t, spoolDir, archive, small, done)
	filepath.WalkDir(archive, func(path string, d os.DirEntry, err error) error {
		if strings.Contains(path, bigInst) {
			t.Errorf("the aborted object reached the archive: %s", path)
		}
		return nil
	})
}

// TestShutdownRightAfterStart: a SIGTERM that arrives the moment the
// gateway says it is listening (a supervisor restarting it, a test ending
// early) is a clean shutdown with status 0, not death by the signal's
// default action. Signals used to be caught only after that log line.
func TestShutdownRightAfterStart(t *testing.T) {
	t.Parallel()
	for i := range 5 {
		g, err := harness.Start(t.TempDir(), "--spool-min-free", "0", "--archive-dir", t.TempDir())
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		g.Signal(syscall.SIGTERM)
		select {
		case <-g.Exited():
		case <-time.After(20 * time.Second):
			t.Fatalf("start %d: the gateway did not exit", i)
		}
		if err := g.Err(); err != nil {
			t.Errorf("start %d: exit: %v, want status 0\n%s", i, err, harness.Tail(g.Logs(), 4000))
		}
	}
}

// TestShutdownSecondSignal: with a long --shutdown-timeout and a transfer
// stuck mid-object, a second SIGTERM ends the wait at once: the running
// association is aborted, the gateway exits 0 within seconds, and what was
// acknowledged before is delivered after a restart.
func TestShutdownSecondSignal(t *testing.T) {
	t.Parallel()
	spoolDir, archive := t.TempDir(), t.TempDir()
	g := startGateway(t, spoolDir, "--stow-url", "http://127.0.0.1:9/dicom-web", "--shutdown-timeout", "10m", "--retry-min", "1h")
	small := studyObjects(t, t.TempDir(), 2, 4096)
	storeAll(t, g.Addr, "BEFORE", small)
	_, unstall, done := stalledStore(t, g, "BIG")
	release := sync.OnceFunc(unstall)
	defer release()

	g.Signal(syscall.SIGTERM)
	if _, err := g.WaitLog("shutting down: no new associations; waiting for running ones", 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.Exited():
		t.Fatal("the gateway exited on the first signal with a transfer running and --shutdown-timeout 10m")
	case <-time.After(500 * time.Millisecond):
	}
	start := time.Now()
	g.Signal(syscall.SIGTERM)
	select {
	case <-g.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway did not exit on the second signal")
	}
	if err := g.Err(); err != nil {
		t.Errorf("exit: %v, want status 0", err)
	}
	t.Logf("exited %v after the second signal", time.Since(start).Round(time.Millisecond))
	if _, err := g.WaitLog("second signal: aborting running associations now", time.Second, nil); err != nil {
		t.Error(err)
	}
	release()
	deliveredAfterRestart(t, spoolDir, archive, small, done)
}

// deliveredAfterRestart ends a shutdown test: the sender whose store was
// cut off (done) has noticed, nothing partial is left, and a gateway
// restarted on the spool delivers every acknowledged object (acked) into
// archive.
func deliveredAfterRestart(t *testing.T, spoolDir, archive string, acked []testObject, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err == nil {
			t.Error("the interrupted store succeeded")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the interrupted sender never noticed")
	}
	noPartials(t, spoolDir)

	g := startGateway(t, spoolDir, "--archive-dir", archive)
	waitDrained(t, g, 30*time.Second)
	for _, o := range acked {
		matches, _ := filepath.Glob(filepath.Join(archive, o.StudyInstanceUID, "*", o.SOPInstanceUID+".dcm"))
		if len(matches) != 1 {
			t.Errorf("acknowledged object %s not delivered after restart (%v)", o.SOPInstanceUID, matches)
		}
	}
}
