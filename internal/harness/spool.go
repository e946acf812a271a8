package harness

import (
	"path/filepath"

	"golang.org/x/sys/unix"
)

// SpooledFiles lists the committed objects in a gateway's spool directory.
func SpooledFiles(spoolDir string) ([]string, error) {
	return filepath.Glob(filepath.Join(spoolDir, "queue", "*.dcm"))
}

// PartialFiles lists the objects in the spool's incoming directory: being
// received, or left by a crash. The hidden slots (prepared empty files,
// or other names of objects being committed) are not objects.
func PartialFiles(spoolDir string) ([]string, error) {
	return filepath.Glob(filepath.Join(spoolDir, "incoming", "[^.]*"))
}

// Sealed reports whether a file in incoming/ carries the spool's seal: a
// complete object, committed or caught while being committed, that a
// restart queues (or finds queued) rather than removes.
func Sealed(path string) bool {
	_, err := unix.Getxattr(path, "user.dicomgw.seal", make([]byte, 128))
	return err == nil
}
