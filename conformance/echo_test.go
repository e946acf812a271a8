package conformance

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// TestEchoscuAgainstGateway: dcmtk's echoscu negotiates Verification and
// gets C-ECHO success (PS3.4 A.4), then releases (PS3.8 7.2).
func TestEchoscuAgainstGateway(t *testing.T) {
	t.Parallel()
	echoscu := needTool(t, "echoscu")
	g := startGateway(t, t.TempDir())
	r := runTool(30*time.Second, echoscu, "-aet", "ECHOSCU", "-aec", calledAE, g.Host(), g.Port())
	if r.Code != 0 {
		t.Fatalf("echoscu failed: %v", r)
	}
	rec, err := g.WaitLog("association ended", 5*time.Second, func(m map[string]any) bool { return m["calling_ae"] == "ECHOSCU" })
	if err != nil {
		t.Fatal(err)
	}
	if rec["outcome"] != "released" || rec["echoes"] != float64(1) {
		t.Errorf("association ended with outcome %v and %v echoes; want released and 1", rec["outcome"], rec["echoes"])
	}
}

// TestDicomgwEcho runs `dicomgw echo`, our requestor, against dicomgw and
// against dcmtk's storescp: the requestor side has to work with a real
// acceptor, not only with ourselves.
func TestDicomgwEcho(t *testing.T) {
	t.Parallel()
	bin, err := harness.Binary()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("against dicomgw", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir())
		r := runTool(30*time.Second, bin, "echo", "--calling-ae", "GWECHO", "--called-ae", calledAE, g.Addr)
		if r.Code != 0 || !strings.Contains(r.Out, "status 0x0000") {
			t.Fatalf("dicomgw echo against dicomgw: %v", r)
		}
		if _, err := g.WaitLog("association ended", 5*time.Second, func(m map[string]any) bool {
			return m["calling_ae"] == "GWECHO" && m["outcome"] == "released"
		}); err != nil {
			t.Error(err)
		}
	})
	t.Run("against storescp", func(t *testing.T) {
		t.Parallel()
		// storescp accepts Verification by default (no -xf profile).
		scp := startStorescp(t, "STORESCP")
		r := runTool(30*time.Second, bin, "echo", "--calling-ae", "GWECHO", "--called-ae", "STORESCP", scp.Addr())
		if r.Code != 0 || !strings.Contains(r.Out, "status 0x0000") {
			t.Fatalf("dicomgw echo against storescp: %v\nstorescp output:\n%s", r, scp.Output())
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		t.Parallel()
		// The command must fail, not hang or report success.
		port, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		r := runTool(30*time.Second, bin, "echo", "--timeout", "3s", "127.0.0.1:"+strconv.Itoa(port))
		if r.Code == 0 {
			t.Fatalf("dicomgw echo succeeded with nothing listening: %v", r)
		}
	})
}
