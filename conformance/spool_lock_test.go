package conformance

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// TestSecondDaemonRefused: an operator removes .lock from the spool of a
// running gateway and starts a second gateway on the same spool, by its
// path, a symlink to it, a relative path or a bind mount of it (when run
// as root). Each time the second one exits non-zero, naming the spool and
// the first one's PID, without listening; the first keeps taking objects,
// and every object it acknowledged, before and after, is queued intact.
// (With the lock on .lock alone, the second gateway started, and the two
// lost and damaged acknowledged objects between them.)
func TestSecondDaemonRefused(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	spoolDir := filepath.Join(base, "spool")
	g := startGateway(t, spoolDir)
	objs := studyObjects(t, t.TempDir(), 6, 8192)
	storeAll(t, g.Addr, "LOCKSCU", objs[:3])

	if err := os.Remove(filepath.Join(spoolDir, ".lock")); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	paths := []string{spoolDir, filepath.Join(base, "symlink")}
	if err := os.Symlink(spoolDir, paths[1]); err != nil {
		t.Fatal(err)
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, spoolDir); err == nil {
			paths = append(paths, rel)
		}
	}
	bind := filepath.Join(base, "bind")
	if err := os.Mkdir(bind, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(spoolDir, bind, "", syscall.MS_BIND, ""); err == nil {
		t.Cleanup(func() {
			if err := syscall.Unmount(bind, 0); err != nil {
				t.Errorf("unmount %s: %v", bind, err)
				syscall.Unmount(bind, syscall.MNT_DETACH)
			}
		})
		paths = append(paths, bind)
	} else if os.Geteuid() == 0 {
		t.Errorf("bind mount as root: %v", err)
	} else {
		t.Logf("no bind mount without root (%v): that path is not tried", err)
	}

	want := "is in use by another dicomgw (pid " + strconv.Itoa(g.PID()) + ")"
	for _, p := range paths {
		g2, err := harness.Start(p, "--stow-url", "http://127.0.0.1:1/dicom-web", "--spool-min-free", "0")
		if err == nil {
			g2.Kill()
			t.Errorf("a second gateway started on the spool by %s with .lock removed (PID %d beside %d)", p, g2.PID(), g.PID())
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "exited before listening (exit status 1)") || !strings.Contains(msg, want) {
			t.Errorf("second gateway by %s: %v\nwant exit status 1 and %q", p, err, want)
		}
	}

	select {
	case <-g.Exited():
		t.Fatalf("the first gateway exited: %v", g.Err())
	default:
	}
	storeAll(t, g.Addr, "LOCKSCU", objs[3:])
	noPartials(t, spoolDir)
	queued := map[string][]byte{}
	for f := range queueSnapshot(t, spoolDir) {
		o := readSpooled(t, f)
		queued[o.Meta.SOPInstanceUID] = o.DataSet
	}
	for _, o := range objs {
		if got, ok := queued[o.SOPInstanceUID]; !ok {
			t.Errorf("acknowledged %s is not queued", o.SOPInstanceUID)
		} else if !bytes.Equal(got, o.DataSet) {
			t.Errorf("acknowledged %s is queued with a different data set", o.SOPInstanceUID)
		}
	}
	if len(queued) != len(objs) {
		t.Errorf("%d objects queued, want %d", len(queued), len(objs))
	}
}
