package conformance

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dicomgw/dicomgw/pkg/dimse"
)

// unwritable makes dir refuse new entries until restore is called (at the
// test's end at the latest). For a user, chmod 0500; root ignores
// permissions, so as root the immutable attribute (chattr +i) where the
// file system has it (ext4, xfs, btrfs), else a read-only bind mount of
// dir on itself. It fails the test if dir still takes a new file.
func unwritable(t *testing.T, dir string) (restore func()) {
	t.Helper()
	undo := func() error { return nil }
	var how string
	switch {
	case os.Geteuid() != 0:
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		how, undo = "chmod 0500", func() error { return os.Chmod(dir, 0o750) }
	default:
		err := immutable(dir, true)
		if err == nil {
			how, undo = "chattr +i", func() error { return immutable(dir, false) }
			break
		}
		t.Logf("chattr +i %s: %v; a read-only bind mount instead", dir, err)
		if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
			t.Fatalf("bind mount %s: %v", dir, err)
		}
		if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
			syscall.Unmount(dir, syscall.MNT_DETACH)
			t.Fatalf("remount %s read-only: %v", dir, err)
		}
		how, undo = "a read-only bind mount", func() error { return syscall.Unmount(dir, syscall.MNT_DETACH) }
	}
	var done bool
	restore = func() {
		if done {
			return
		}
		done = true
		if err := undo(); err != nil {
			t.Errorf("making %s writable again (%s): %v", dir, how, err)
		}
	}
	t.Cleanup(restore)
	if f, err := os.CreateTemp(dir, "writable-*"); err == nil {
		f.Close()
		os.Remove(f.Name())
		t.Fatalf("%s still takes new files after %s", dir, how)
	}
	t.Logf("%s made unwritable with %s", dir, how)
	return restore
}

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h (not in x/sys/unix).
const fsImmutableFL = 0x00000010

// immutable sets or clears the immutable attribute of dir (FS_IOC_SETFLAGS,
// as chattr does).
func immutable(dir string, on bool) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	if on {
		flags |= fsImmutableFL
	} else {
		flags &^= fsImmutableFL
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags)
}

// TestReadyzQueueNotWritable: with the spool's queue/ not writable (its
// top directory and incoming/ still are), a C-STORE gets A700 and /readyz
// turns 503, its spool_writable check naming queue/: readiness does what
// a commit needs. Once queue/ is writable again, /readyz is 200 by itself,
// C-STOREs get 0000, and the readiness probe has left nothing in the
// spool. (Readiness used to write a file in the spool's top directory
// only, and stayed 200 while every C-STORE got A700.)
func TestReadyzQueueNotWritable(t *testing.T) {
	t.Parallel()
	spoolDir := t.TempDir()
	g := startGateway(t, spoolDir)
	waitReady(t, g, http.StatusOK, 10*time.Second)
	objs := studyObjects(t, t.TempDir(), 3, 4096)

	restore := unwritable(t, filepath.Join(spoolDir, "queue"))
	c := dial(t, g.Addr, "READYSCU", storeContext(sopSecondaryCapture, tsExplicitLE))
	rsp, err := c.Store(sopSecondaryCapture, objs[0].SOPInstanceUID, tsExplicitLE, bytes.NewReader(objs[0].DataSet))
	if err != nil {
		t.Fatal(err)
	}
	if rsp.Status != dimse.StatusOutOfResources {
		t.Errorf("C-STORE with queue/ not writable: %v (%q), want A700", rsp.Status, rsp.ErrorComment)
	}
	c.Release()
	// The probe's result is kept for 5 s.
	m := waitReady(t, g, http.StatusServiceUnavailable, 20*time.Second)
	checks, _ := m["checks"].(map[string]any)
	writable, _ := checks["spool_writable"].(map[string]any)
	if reason, _ := writable["reason"].(string); !strings.Contains(reason, "queue/") {
		t.Errorf("/readyz with queue/ not writable: %v, want spool_writable failing with a reason naming queue/", checks)
	}

	restore()
	waitReady(t, g, http.StatusOK, 20*time.Second)
	storeAll(t, g.Addr, "READYSCU", objs)
	if n := len(newObjects(t, spoolDir, nil)); n != len(objs) {
		t.Errorf("%d objects queued, want %d", n, len(objs))
	}
	noPartials(t, spoolDir)
	for _, pattern := range []string{".probe-*", "*/.probe-*"} {
		if left, _ := filepath.Glob(filepath.Join(spoolDir, pattern)); len(left) != 0 {
			t.Errorf("the readiness probe left %v", left)
		}
	}
}
