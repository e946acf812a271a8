package harness

import "path/filepath"

// SpooledFiles lists the committed objects in a gateway's spool directory.
func SpooledFiles(spoolDir string) ([]string, error) {
	return filepath.Glob(filepath.Join(spoolDir, "queue", "*.dcm"))
}

// PartialFiles lists what is in the spool's incoming directory: objects
// being received, or left by a crash.
func PartialFiles(spoolDir string) ([]string, error) {
	return filepath.Glob(filepath.Join(spoolDir, "incoming", "*"))
}
